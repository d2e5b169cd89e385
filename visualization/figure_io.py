"""Saving matplotlib figures as PNG files, atomically (the project's ``utils.file_io.atomic_write``)."""
from utils.file_io import atomic_write


def save_figure(fig, output_path: str, dpi: int = 100) -> str:
    """Write ``fig`` to ``output_path`` as PNG (temp file + rename), close it, return the path."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(output_path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return output_path
