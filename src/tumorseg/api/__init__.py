"""The web app and REST API (`tumorseg serve`); needs the `serve` extra."""
