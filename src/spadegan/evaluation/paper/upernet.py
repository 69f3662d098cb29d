"""(being written) see paper/__init__.py for the module contract."""
RELEASED_FILES: tuple[str, ...] = ()
NUM_CLASSES = 0
PREPROCESSINGS: tuple[str, ...] = ("default",)


def load(files, preprocessing, device):
    raise NotImplementedError
