"""AnoGen Studio, the PySide6 desktop app.

Presentation only: every data operation (project files, images, models, jobs) goes
through the :mod:`anogen` library. Qt is imported here and nowhere in ``anogen``.
"""

from app.qtcompat import protect_bool_singletons

protect_bool_singletons()
