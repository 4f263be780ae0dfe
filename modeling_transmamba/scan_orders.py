"""Scan orders: which token a direction visits at each step, and the move that led into it.

A direction is a permutation ``perm`` of the token sequence: step ``t`` of the scan reads token ``perm[t]``
(tokens are in raster order, class token included where the model has one). The distillation loss uses the
same permutations to put teacher tokens into each direction's order, so they live here, in the model code.
"""

from __future__ import annotations

import torch

ONE_D_DIRECTIONS = ("forward", "backward")
TWO_D_DIRECTIONS = (
    "rows",  # row snake from the top-left corner: row 0 left->right, row 1 right->left, ...
    "rows_reversed",
    "cols",  # column snake from the top-left corner
    "cols_reversed",
    "rows_tr",  # row snake from the top-right corner
    "rows_tr_reversed",
    "cols_bl",  # column snake from the bottom-left corner (from the top-right it would repeat cols_reversed)
    "cols_bl_reversed",
    "row_major",  # VMamba's SS2D cross scan: raster order, every row left->right
    "row_major_reversed",
    "col_major",  # every column top->bottom, columns left->right (raster order of the transposed grid)
    "col_major_reversed",
)
SS2D_DIRECTIONS = ("row_major", "col_major", "row_major_reversed", "col_major_reversed")
DIRECTIONS = ONE_D_DIRECTIONS + TWO_D_DIRECTIONS

# Codes of the move that led into a token (PlainMamba's direction-aware update).
MOVE_START, MOVE_RIGHT, MOVE_LEFT, MOVE_UP, MOVE_DOWN = range(5)


def _snake(height: int, width: int, by_columns: bool, mirrored: bool) -> torch.Tensor:
    """Boustrophedon over rows (or columns); ``mirrored`` starts rows at the right, columns at the bottom.

    That choice keeps all 8 snakes distinct on every grid: each of the 4 corners starts one row and one column snake.
    """
    grid = torch.arange(height * width).view(height, width)
    if mirrored:
        grid = grid.flip(0 if by_columns else 1)
    lines = grid.t() if by_columns else grid
    lines = lines.clone()
    lines[1::2] = lines[1::2].flip(1)
    return lines.reshape(-1)


def scan_permutation(direction: str, height: int, width: int, length: int | None = None) -> torch.Tensor:
    """Permutation for one direction. 1-D directions take ``length`` (the whole sequence)."""
    if direction == "forward":
        return torch.arange(length if length is not None else height * width)
    if direction == "backward":
        return torch.arange(length if length is not None else height * width).flip(0)
    if direction not in TWO_D_DIRECTIONS:
        raise ValueError(f"Unknown scan direction {direction!r}; choose from {', '.join(DIRECTIONS)}.")
    if direction.startswith(("row_major", "col_major")):
        grid = torch.arange(height * width).view(height, width)
        perm = (grid.t() if direction.startswith("col") else grid).reshape(-1)
        return perm.flip(0) if direction.endswith("reversed") else perm
    base, _, rest = direction.partition("_")
    perm = _snake(height, width, by_columns=base == "cols", mirrored=rest.startswith(("tr", "bl")))
    return perm.flip(0) if rest.endswith("reversed") else perm


def scan_permutations(directions: list[str], height: int, width: int, length: int | None = None) -> torch.Tensor:
    """(directions, length) permutations, one row per direction."""
    return torch.stack([scan_permutation(d, height, width, length) for d in directions])


def move_codes(perm: torch.Tensor, width: int) -> torch.Tensor:
    """For each scan step, the move from the previous token to this one (MOVE_* codes); step 0 is MOVE_START."""
    rows, cols = perm // width, perm % width
    codes = torch.full_like(perm, MOVE_START)
    d_row, d_col = rows[..., 1:] - rows[..., :-1], cols[..., 1:] - cols[..., :-1]
    moves = codes[..., 1:]
    moves[d_col > 0] = MOVE_RIGHT
    moves[d_col < 0] = MOVE_LEFT
    moves[d_row < 0] = MOVE_UP
    moves[d_row > 0] = MOVE_DOWN
    return codes
