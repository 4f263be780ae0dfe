"""`--student` specs (``pmamba-s`` or ``pmamba-s,num_hidden_layers=6,hidden_size=256``) and their checks against a
teacher: the student takes the teacher's patch size, image size, channels, norm eps and activation, and may not be
wider or deeper than it."""

from __future__ import annotations

import inspect
import json

from transformers import PretrainedConfig

from ..modeling_transmamba import PRESETS, TransMambaConfig

_COPIED_FROM_TEACHER = ("patch_size", "num_channels", "layer_norm_eps", "hidden_act")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so list values like ``scan_directions=["forward","backward"]`` work."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if text.startswith("[") and text.endswith("]"):  # [forward,backward]: a list of bare words
            return [part.strip().strip("'\"") for part in text[1:-1].split(",") if part.strip()]
        return {"True": True, "False": False}.get(text, text)


# Overrides that must be positive integers (time_step_rank may also be "auto"), and the list-valued ones.
_POSITIVE = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "state_size", "expand",
             "conv_kernel", "conv_dim", "time_step_rank")  # fmt: skip


def check_override(key: str, value) -> None:
    """One message for a value that would build a degenerate or broken student, before anything loads."""
    if key == "time_step_rank" and value == "auto":
        return
    if key in _POSITIVE and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(
            f"Student override {key}={value!r} is invalid: {key} must be a positive integer (e.g. {key}=2)."
        )
    if key == "mlp_ratio" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
        raise ValueError(f"Student override mlp_ratio={value!r} is invalid: use a number >= 0 (0: no MLP).")
    if key == "scan_directions" and (not isinstance(value, list) or not value):
        raise ValueError(
            f"Student override scan_directions={value!r} is invalid: give a list like "
            '\'scan_directions=["forward","backward"]\'.'
        )
    if key == "scan_directions":
        from ..modeling_transmamba.scan_orders import DIRECTIONS

        unknown = [d for d in value if d not in DIRECTIONS]
        if unknown:
            raise ValueError(
                f"Student override scan_directions: unknown {unknown}; choose from {', '.join(DIRECTIONS)}."
            )


def teacher_fields(teacher_config: PretrainedConfig, image_size: int, names=_COPIED_FROM_TEACHER) -> dict:
    """What a student takes from its teacher whatever its family: the fields the copied weights need, and the
    image size."""
    return {**{name: getattr(teacher_config, name) for name in names}, "image_size": image_size}


def parse_spec(spec: str, presets: dict, config_class: type, kind: str, extra_fields: tuple[str, ...] = ()):
    """``preset[,key=value...]`` -> (preset, overrides) for every student family (``kind`` names it in the
    messages); unknown presets, unknown fields and degenerate values fail here, before any loading."""
    preset, *items = [part.strip() for part in _split_top_level(spec)]
    if preset not in presets:
        raise ValueError(f"Unknown {kind} preset {preset!r}; choose one of {', '.join(presets)}.")
    known = set(extra_fields) | (set(inspect.signature(config_class.__init__).parameters) - {"self", "kwargs"})
    return preset, parse_overrides(items, sorted(known))


def parse_overrides(items: list[str], known: list[str]) -> dict:
    """``["key=value", ...]`` -> {key: value} for keys in ``known``; unknown keys and degenerate values fail."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"Bad student override {item!r}: expected key=value with key one of {', '.join(known)}.")
        overrides[key] = _value(raw.strip())
        check_override(key, overrides[key])
    return overrides


def parse_student_spec(spec: str) -> tuple[str, dict]:
    """An isotropic image student's spec (``pmamba-s,num_hidden_layers=6``), see `parse_spec`."""
    return parse_spec(spec, PRESETS, TransMambaConfig, "student")


def student_config_for(
    teacher_config: PretrainedConfig,
    spec: str,
    image_size: int,
    mlp_width: int,
    num_labels: int | None,
    id2label: dict | None,
) -> TransMambaConfig:
    """The student's config: preset, then the teacher's shape fields, then the user's overrides (checked)."""
    preset, overrides = parse_student_spec(spec)
    from_teacher = teacher_fields(teacher_config, image_size)
    for key in _COPIED_FROM_TEACHER:
        if key in overrides and overrides[key] != from_teacher[key]:
            copied = "patch embedding" if key == "patch_size" else "weights"
            raise ValueError(
                f"Student {key}={overrides[key]!r} does not match the teacher's {from_teacher[key]!r}; the copied "
                f"{copied} need the teacher's value (drop the override)."
            )
    fields = {**PRESETS[preset], **from_teacher, **overrides}
    width, depth = fields["hidden_size"], fields["num_hidden_layers"]
    if width > teacher_config.hidden_size:
        raise ValueError(
            f"Student hidden_size {width} is wider than the teacher's {teacher_config.hidden_size}; subcloning keeps "
            f"a subset of the teacher's channels: use hidden_size<={teacher_config.hidden_size} (e.g. "
            f"--student {preset},hidden_size={teacher_config.hidden_size})."
        )
    if depth > teacher_config.num_hidden_layers:
        raise ValueError(
            f"Student num_hidden_layers {depth} is deeper than the teacher's {teacher_config.num_hidden_layers}; "
            f"subcloning takes the teacher's first n layers: use num_hidden_layers<={teacher_config.num_hidden_layers}."
        )
    if int(width * fields.get("mlp_ratio", 4.0)) > mlp_width:
        raise ValueError(
            f"Student MLP width {int(width * fields.get('mlp_ratio', 4.0))} exceeds the teacher's {mlp_width}; "
            f"lower mlp_ratio to at most {mlp_width / width:g}."
        )
    return labelled_config(TransMambaConfig, fields, spec, num_labels, id2label)


def labelled_config(config_class: type, fields: dict, spec: str, num_labels: int | None, id2label: dict | None):
    """``config_class(**fields)`` with the teacher's labels (``id2label``) or a fresh head of ``num_labels``; a
    value the config refuses is one message naming the spec."""
    fields = dict(fields)
    if id2label:
        fields["id2label"] = {int(k): v for k, v in id2label.items()}
        fields["label2id"] = {v: int(k) for k, v in id2label.items()}
    elif num_labels:
        fields["num_labels"] = num_labels
    try:
        return config_class(**fields)
    except ValueError as error:
        raise ValueError(f"Student spec {spec!r} is invalid: {error}") from None
