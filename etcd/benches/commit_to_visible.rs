//! The etcd-to-snapshot benchmark (written in the next commit).

fn main() {}
