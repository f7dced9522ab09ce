//! The embedded Workspace API simulator (`jobwatch sim`).
