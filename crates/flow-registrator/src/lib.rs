//! flow-registrator (work in progress).
