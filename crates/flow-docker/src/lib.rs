//! flow-docker (work in progress).
