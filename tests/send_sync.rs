//! Static thread-safety promises, checked at compile time.
//!
//! Positive assertions are plain trait-bound functions. Negative ones
//! ("this type is *not* `Sync`") use the ambiguity trick of the
//! `static_assertions` crate: a blanket trait implemented twice, once for
//! every type and once for types with the marker; naming the method without
//! saying which impl is ambiguous, and fails to compile, exactly when the
//! type has the marker.
//!
//! Already covered by `compile_fail` doctests and not repeated here: a map
//! with a non-`Sync` value is not `Sync`, a map with a non-`Send` key is not
//! `Send`, and `Pinned` is not `Send`.

use std::cell::Cell;
use std::error::Error;
use std::marker::PhantomData;
use std::sync::Arc;

use snapmap::{
    BuildError, Builder, DefaultHashBuilder, Iter, Keys, OccupiedError, Pinned, RetiredBytes,
    SnapMap, Stats, Values,
};

fn sync<T: Sync>() {}
fn send_sync<T: Send + Sync>() {}
fn static_error<T: Error + Send + Sync + 'static>() {}

/// Compiles only if `$t` does **not** implement `$marker`.
macro_rules! assert_not_impl {
    ($t:ty, $marker:path) => {
        const _: fn() = || {
            #[allow(dead_code)]
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            #[allow(dead_code)]
            struct Invalid;
            impl<T: ?Sized + $marker> AmbiguousIfImpl<Invalid> for T {}
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        };
    };
}

/// A hasher that is neither `Send` nor `Sync`.
#[derive(Default)]
struct LocalHasher(PhantomData<std::rc::Rc<()>>);

impl std::hash::BuildHasher for LocalHasher {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::DefaultHasher::new()
    }
}

/// A hasher that is `Send` but not `Sync`.
struct UnsyncHasher(PhantomData<Cell<u8>>);

// A map of thread-safe keys and values is thread-safe...
#[test]
fn map_is_send_and_sync_for_send_sync_keys_and_values() {
    send_sync::<SnapMap<u64, u64>>();
    send_sync::<SnapMap<String, Vec<u8>>>();
    send_sync::<SnapMap<Arc<str>, Arc<std::sync::Mutex<Vec<u8>>>>>();
    send_sync::<SnapMap<u64, u64, std::hash::RandomState>>();
    send_sync::<SnapMap<u64, u64, foldhash::fast::RandomState>>();
    // ...and can be shared between threads through an `Arc`.
    send_sync::<Arc<SnapMap<String, String>>>();

    let map = Arc::new(SnapMap::<u64, u64>::new());
    let worker = {
        let map = Arc::clone(&map);
        std::thread::spawn(move || map.insert(1, 2))
    };
    worker.join().unwrap();
    assert_eq!(map.get(&1), Some(2));
}

// ...but not with a hasher that is not thread-safe: sharing the map would
// share the hasher.
assert_not_impl!(SnapMap<u64, u64, LocalHasher>, Send);
assert_not_impl!(SnapMap<u64, u64, LocalHasher>, Sync);
assert_not_impl!(SnapMap<u64, u64, UnsyncHasher>, Sync);

#[test]
fn small_public_types_are_send_and_sync() {
    send_sync::<Stats>();
    send_sync::<RetiredBytes>();
    send_sync::<BuildError>();
    send_sync::<DefaultHashBuilder>();
    send_sync::<Builder<String, u64>>();
    send_sync::<Builder<u64, u64, std::hash::RandomState>>();
    send_sync::<OccupiedError<'static, String>>();
    // The errors can travel in a `Box<dyn Error + Send + Sync>`.
    static_error::<BuildError>();
    static_error::<OccupiedError<'static, u64>>();
}

// Iterators borrow the pinned thread's epoch guard: they stay on that
// thread, like the handle itself.
assert_not_impl!(Iter<'static, u64, u64>, Send);
assert_not_impl!(Iter<'static, u64, u64>, Sync);
assert_not_impl!(Keys<'static, u64, u64>, Send);
assert_not_impl!(Values<'static, u64, u64>, Send);

// A pinned handle counts its read hits in a `Cell`: sharing `&Pinned`
// between threads must not compile (its `!Send` is a doctest already).
assert_not_impl!(Pinned<'static, u64, u64, DefaultHashBuilder>, Sync);

#[test]
fn references_from_a_pinned_handle_are_ordinary_references() {
    // `&V` from a handle can be used by scoped threads while the handle
    // lives on the pinning thread.
    sync::<u64>();
    let map: SnapMap<u64, String> = SnapMap::new();
    map.insert(1, "one".to_string());
    let pinned = map.pin();
    let value: &String = pinned.get(&1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(value, "one"));
    });
}
