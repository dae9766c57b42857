//! flow-consul (work in progress).
