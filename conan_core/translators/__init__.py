"""Components of one registry kind; see conan_core/registries.py for the keys."""
