//! The end-to-end harness for Portcullis: fixtures shared by the suites in `tests/`.
