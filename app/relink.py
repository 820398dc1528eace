"""Re-point a linked dataset that moved, when a project is opened.

A project links an outside dataset folder by its absolute path. When that folder moved
(another disk, a renamed share), the project no longer opens strictly. Instead of only
showing the list of missing files, the app asks where each missing folder is now and
re-points it with :meth:`anogen.data.workspace.Workspace.relink_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

from anogen.data.workspace import Workspace
from anogen.errors import AnoGenError

# Asks for a folder: (parent, caption, start folder) -> chosen folder, "" when cancelled.
AskFolder = Callable[[QWidget, str, str], str]


def relink_moved_datasets(parent: QWidget, folder: Path,
                          ask_folder: AskFolder | None = None) -> Workspace | None:
    """Open ``folder`` after asking where its missing linked datasets went.

    Returns the opened, re-pointed and saved workspace, or ``None`` when no linked dataset
    is missing (the project fails for another reason), the user cancels, or the project
    still has problems afterwards; the caller then shows the original error.
    """
    ask_folder = ask_folder or QFileDialog.getExistingDirectory
    try:
        workspace = Workspace.open(folder, strict=False)
    except AnoGenError:
        return None
    missing = workspace.missing_linked_datasets()
    if not missing:
        workspace.close()
        return None
    for old in missing:
        new = ask_folder(parent, f"The dataset folder {old} has moved: where is it now?", str(Path(folder).parent))
        if not new:
            workspace.close()
            return None
        try:
            workspace.relink_dataset(old, new)
        except AnoGenError:
            workspace.close()
            return None
    if workspace.validate() or workspace.read_only:
        workspace.close()
        return None
    workspace.save()
    return workspace
