"""Stage 1 of TransMamba: subclone a ViT-family Transformer into a Mamba student and export it for the Hub.

``teachers`` loads and maps the teacher, ``importance`` picks kept channels, ``subclone`` copies tensors and
reports their provenance, ``export``/``hub`` write and publish the folder, ``cli`` is `transmamba convert`;
``llava`` subclones a LLaVA teacher (Trans-LLaVA).
"""
