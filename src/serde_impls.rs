//! `serde` support (the `serde` feature): what each type serialises as,
//! and with which consistency.
//!
//! | type | `Serialize` | `Deserialize` |
//! |---|---|---|
//! | [`SnapMap`] | a map, from a pinned walk (below) | a map; a repeated key keeps its last value |
//! | [`Snapshot`](crate::Snapshot) | a map, one point in time (in `snapshot/frozen.rs`) | no: make a map, then snapshot it |
//! | [`Batch`] | no | `{"insert": {key: value, ...}, "remove": [key, ...]}` |
//!
//! # A map serialises from a pinned walk
//!
//! `Serialize for SnapMap` walks the map through one pinned handle, as
//! [`Pinned::iter`](crate::Pinned::iter) does: each shard as of the moment
//! the walk reaches it, every key at most once, no lock once no shard has
//! new keys pending, and no clone of a key or value. It is **not** a point
//! in time: writes during the walk may be in the document for one shard and
//! not for another, and a batch may be seen in part. For one consistent
//! document, serialise `map.snapshot()` instead (a snapshot serialises the
//! same way, as a map). The walk first collects references to the entries
//! (16 bytes each, freed at the end) so that the map's length is exact
//! before the first entry is written: formats that need it up front
//! (`bincode`, say) then work, and the length always agrees with the
//! entries.
//!
//! # A batch deserialises as inserts and removals
//!
//! A [`Batch`] is a change, so its document can say what goes as well as
//! what comes: a map with two optional fields, `insert` (a map of keys to
//! values) and `remove` (a sequence of keys). The removals are applied
//! first, then the inserts, whatever the order of the fields in the
//! document, so a key in both ends with the inserted value; a key given
//! twice under `insert` takes its last value. Any other field is an error
//! (a plain map of inserts is not silently read as an empty batch). For a
//! plain map of inserts, deserialise a map type and collect it into a
//! batch (`Batch` is `FromIterator<(K, V)>`), or reload the whole content
//! with [`SnapMap::replace_all`].
//!
//! # Errors leave nothing behind
//!
//! A document that fails part way (a bad value, a duplicate field)
//! returns the deserializer's error; the map or batch built so far is
//! dropped with it, freeing every entry.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::batch::{Batch, BatchOp};
use crate::map::SnapMap;

#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<K, V, S> Serialize for SnapMap<K, V, S>
where
    K: Serialize + Hash + Eq + Send + Sync + 'static,
    V: Serialize + Send + Sync + 'static,
    S: BuildHasher,
{
    /// Serialises as a map, from a pinned walk: each shard as of when the
    /// walk reaches it, not one point in time (module docs; serialise
    /// [`snapshot()`](SnapMap::snapshot) for that).
    ///
    /// ```
    /// let map = snapmap::SnapMap::new();
    /// map.insert("limit", 10);
    /// assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"limit":10}"#);
    /// ```
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let pinned = self.pin();
        let entries: Vec<(&K, &V)> = pinned.iter().collect();
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (key, value) in entries {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de, K, V, S> Deserialize<'de> for SnapMap<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq + Send + Sync + 'static,
    V: Deserialize<'de> + Send + Sync + 'static,
    S: BuildHasher + Default,
{
    /// Deserialises from a map, into a map with the default hasher and
    /// options; a key given twice keeps its last value.
    ///
    /// ```
    /// let map: snapmap::SnapMap<String, u32> =
    ///     serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
    /// assert_eq!((map.len(), map.get("a")), (2, Some(3)));
    /// ```
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Reads a map into a `SnapMap`.
struct MapVisitor<K, V, S>(Produces<SnapMap<K, V, S>>);

/// A visitor's marker for the type it makes (`fn() -> T`: it owns no `T`,
/// so it is `Send`, `Sync` and covariant whatever `T` is).
type Produces<T> = PhantomData<fn() -> T>;

impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq + Send + Sync + 'static,
    V: Deserialize<'de> + Send + Sync + 'static,
    S: BuildHasher + Default,
{
    type Value = SnapMap<K, V, S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let map = SnapMap::default();
        {
            let pinned = map.pin();
            while let Some((key, value)) = access.next_entry()? {
                pinned.insert(key, value);
            }
        }
        Ok(map)
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de, K, V> Deserialize<'de> for Batch<K, V>
where
    K: Deserialize<'de>,
    V: Deserialize<'de>,
{
    /// Deserialises from `{"insert": {key: value, ...}, "remove": [key,
    /// ...]}`, both fields optional: the removals, then the inserts (module
    /// docs).
    ///
    /// ```
    /// use snapmap::{Batch, SnapMap};
    ///
    /// let map = SnapMap::new();
    /// map.insert("old".to_string(), 1);
    /// let reload: Batch<String, u32> =
    ///     serde_json::from_str(r#"{"insert": {"new": 2}, "remove": ["old"]}"#).unwrap();
    /// let applied = map.apply(reload);
    /// assert_eq!((applied.inserted, applied.removed), (1, 1));
    /// assert_eq!((map.get("old"), map.get("new")), (None, Some(2)));
    /// ```
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Batch", FIELDS, BatchVisitor(PhantomData))
    }
}

/// The fields of a batch document.
const FIELDS: &[&str] = &["insert", "remove"];

/// One field name of a batch document.
enum Field {
    Insert,
    Remove,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`insert` or `remove`")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                match name {
                    "insert" => Ok(Field::Insert),
                    "remove" => Ok(Field::Remove),
                    other => Err(E::unknown_field(other, FIELDS)),
                }
            }

            fn visit_bytes<E: de::Error>(self, name: &[u8]) -> Result<Field, E> {
                match name {
                    b"insert" => Ok(Field::Insert),
                    b"remove" => Ok(Field::Remove),
                    other => Err(E::unknown_field(&String::from_utf8_lossy(other), FIELDS)),
                }
            }

            // Formats that name fields by index (non-self-describing ones).
            fn visit_u64<E: de::Error>(self, index: u64) -> Result<Field, E> {
                match index {
                    0 => Ok(Field::Insert),
                    1 => Ok(Field::Remove),
                    other => Err(E::invalid_value(
                        de::Unexpected::Unsigned(other),
                        &"field index 0 or 1",
                    )),
                }
            }
        }

        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// Reads a batch document.
struct BatchVisitor<K, V>(Produces<Batch<K, V>>);

impl<'de, K, V> Visitor<'de> for BatchVisitor<K, V>
where
    K: Deserialize<'de>,
    V: Deserialize<'de>,
{
    type Value = Batch<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a batch: {"insert": {key: value, ...}, "remove": [key, ...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut inserts: Option<Vec<BatchOp<K, V>>> = None;
        let mut removes: Option<Vec<BatchOp<K, V>>> = None;
        while let Some(field) = access.next_key::<Field>()? {
            match field {
                Field::Insert if inserts.is_some() => {
                    return Err(de::Error::duplicate_field("insert"));
                }
                Field::Insert => inserts = Some(access.next_value::<Inserts<K, V>>()?.0),
                Field::Remove if removes.is_some() => {
                    return Err(de::Error::duplicate_field("remove"));
                }
                Field::Remove => removes = Some(access.next_value::<Removes<K, V>>()?.0),
            }
        }
        Ok(assemble(inserts, removes))
    }

    // Formats that write a struct as a sequence of its fields.
    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let inserts = access.next_element::<Inserts<K, V>>()?.map(|i| i.0);
        let removes = access.next_element::<Removes<K, V>>()?.map(|r| r.0);
        Ok(assemble(inserts, removes))
    }
}

/// The batch: removals first, then inserts (module docs).
fn assemble<K, V>(
    inserts: Option<Vec<BatchOp<K, V>>>,
    removes: Option<Vec<BatchOp<K, V>>>,
) -> Batch<K, V> {
    let mut ops = removes.unwrap_or_default();
    ops.extend(inserts.unwrap_or_default());
    Batch { ops }
}

/// The `insert` field: a map of keys to values, as insert operations in
/// document order.
struct Inserts<K, V>(Vec<BatchOp<K, V>>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Inserts<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InsertsVisitor<K, V>(Produces<(K, V)>);

        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for InsertsVisitor<K, V> {
            type Value = Inserts<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of keys to insert")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // The size hint is the document's claim: capped, so that a
                // hostile length cannot reserve unbounded memory.
                let mut ops = Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some((key, value)) = access.next_entry()? {
                    ops.push(BatchOp::Insert(key, value));
                }
                Ok(Inserts(ops))
            }
        }

        deserializer.deserialize_map(InsertsVisitor(PhantomData))
    }
}

/// The `remove` field: a sequence of keys, as remove operations.
struct Removes<K, V>(Vec<BatchOp<K, V>>);

impl<'de, K: Deserialize<'de>, V> Deserialize<'de> for Removes<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RemovesVisitor<K, V>(Produces<(K, V)>);

        impl<'de, K: Deserialize<'de>, V> Visitor<'de> for RemovesVisitor<K, V> {
            type Value = Removes<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of keys to remove")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // Capped as in `Inserts`.
                let mut ops = Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(key) = access.next_element()? {
                    ops.push(BatchOp::Remove(key));
                }
                Ok(Removes(ops))
            }
        }

        deserializer.deserialize_seq(RemovesVisitor(PhantomData))
    }
}
