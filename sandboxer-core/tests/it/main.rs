//! The one integration test binary of sandboxer-core: the parts that do real
//! I/O, against the real filesystem.

mod store;
