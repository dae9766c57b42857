//! flow-etcd (work in progress).
