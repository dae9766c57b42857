//! flow-store (work in progress).
