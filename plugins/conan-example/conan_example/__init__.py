"""An example conan_core plugin (see CONTRIBUTING.md, "Writing a plugin")."""
