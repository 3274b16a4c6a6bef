from .embedded import ClutteredMnistConfig, EmbeddedDataError, build_cluttered_mnist, load_mnist_subset
from .photos import PhotoObjectsConfig, build_photo_objects
