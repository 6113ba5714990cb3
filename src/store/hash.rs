//! Content hashes: hex SHA-256 of a canonical JSON form, so the same data always hashes the same whatever order
//! the CRM sent its keys in (and whether or not serde_json's `preserve_order` is on somewhere in the build).

use std::io::{self, Write};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of `value`'s canonical JSON. The JSON is written straight into the hasher: a pull hashes every
/// record it reads, and building the text first cost more than the hash itself.
pub fn content_hash(value: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(value, &mut HashWriter(&mut hasher)).expect("hashing cannot fail");
    hex::encode(hasher.finalize())
}

/// Compact JSON with object keys sorted (recursively).
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Feeds written bytes to a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_canonical(value: &Value, out: &mut impl Write) -> io::Result<()> {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(out, scalar).map_err(io::Error::other),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"{")?;
    // Without serde_json's `preserve_order` the map is a BTreeMap and already sorted; only sort when it is not.
    if map.keys().is_sorted() {
        for (i, (key, value)) in map.iter().enumerate() {
            write_entry(i, key, value, out)?;
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (i, (key, value)) in entries.into_iter().enumerate() {
            write_entry(i, key, value, out)?;
        }
    }
    out.write_all(b"}")
}

fn write_entry(i: usize, key: &str, value: &Value, out: &mut impl Write) -> io::Result<()> {
    if i > 0 {
        out.write_all(b",")?;
    }
    serde_json::to_writer(&mut *out, key).map_err(io::Error::other)?;
    out.write_all(b":")?;
    write_canonical(value, out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":1}],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#);
        assert_eq!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_text_so_stored_hashes_stay_valid() {
        // Pinned: rows stored by earlier versions keep matching, or every record would be rewritten once.
        let value: Value = serde_json::from_str(r#"{"b":true,"a":{"y":[1,{"q":"\"é\n","p":1.5}],"x":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&value),
            "{\"a\":{\"x\":null,\"y\":[1,{\"p\":1.5,\"q\":\"\\\"é\\n\"}]},\"b\":true}"
        );
        assert_eq!(
            content_hash(&value),
            "dfbb01fec3edf09c7afeb6bb309189c5d76c7b8a95472100248f4b17047c4093"
        );
    }

    #[test]
    fn different_values_hash_differently() {
        assert_ne!(content_hash(&json!({"a": 1})), content_hash(&json!({"a": "1"})));
        assert_ne!(content_hash(&json!(["a", "b"])), content_hash(&json!(["b", "a"])));
        assert_eq!(content_hash(&json!({})).len(), 64);
    }
}
