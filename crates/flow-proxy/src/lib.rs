//! flow-proxy (work in progress).
