"""Publish a converted folder with `huggingface_hub`; `--dry-run` shows what would go where."""

from __future__ import annotations

import sys
from pathlib import Path

from huggingface_hub import constants, create_repo, get_token, upload_folder


def planned_upload(folder: Path, repo_id: str, private: bool) -> str:
    """Human-readable list of the files and the target repository."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    visibility = "private" if private else "public"
    lines = [f"would upload {len(files)} files to https://huggingface.co/{repo_id} ({visibility} model repo):"]
    lines += [f"  {p.relative_to(folder)}  ({p.stat().st_size:,} bytes)" for p in files]
    return "\n".join(lines)


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool,
    token: str | None = None,
    commit_message: str = "TransMamba stage-1 student",
) -> str:
    """create_repo + upload_folder; any reason it cannot happen becomes one ValueError that names the fix."""
    keep = f"the converted model is complete in {folder}; push it later with `hf upload {repo_id} {folder}`"
    if constants.HF_HUB_OFFLINE:
        raise ValueError(f"Cannot push to {repo_id}: offline mode (HF_HUB_OFFLINE=1); {keep}.")
    token = token or get_token()
    if token is None:
        raise ValueError(
            f"Cannot push to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); {keep}."
        )
    try:
        url = create_repo(repo_id, private=private, exist_ok=True, token=token, repo_type="model")
        upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, commit_message=commit_message)
    except Exception as error:  # noqa: BLE001 - network, auth and HTTP errors all end in one message
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"Cannot push to {repo_id}: {reason}; {keep}.") from None
    return str(url)


def publish(
    folder: Path, repo_id: str, private: bool, dry_run: bool, prog: str, commit_message: str = "TransMamba student"
) -> int:
    """The ``--push-to-hub``/``--dry-run`` tail of a command: prints the plan or the URL; exit code 1 if it failed."""
    if dry_run:
        print(planned_upload(folder, repo_id, private))
        return 0
    try:
        print(f"pushed to {push_folder(folder, repo_id, private, commit_message=commit_message)}")
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


def publish_if_asked(folder: Path, args, prog: str, commit_message: str) -> int:
    """The push tail every publishing command shares: nothing without ``args.push_to_hub``, else `publish`."""
    if not args.push_to_hub:
        return 0
    return publish(folder, args.push_to_hub, args.private, args.dry_run, prog, commit_message)
