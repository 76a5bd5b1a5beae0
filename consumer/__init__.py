"""allocguard's runtime and its edges: configuration, the local stack, the database set-up, the CLI."""
