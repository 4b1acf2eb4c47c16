//! Reading a descriptor's YAML within bounds: size, depth and the number of values (aliases
//! counted as what they expand to).

use super::*;

/// Bounds on a descriptor's YAML, checked while it is read: a real descriptor is a few KiB, a
/// few hundred values, a dozen levels deep. Aliases count as what they expand to, so a short
/// file that expands to millions of values (or nests hundreds deep) is refused after reading
/// `MAX_VALUES` of them, in microseconds.
pub const MAX_BYTES: usize = 64 << 10;
pub const MAX_DEPTH: usize = 32;
pub const MAX_VALUES: usize = 10_000;

/// Reads YAML into a [`Value`] within [`MAX_BYTES`], [`MAX_DEPTH`] and [`MAX_VALUES`].
pub fn load_bounded(text: &str) -> Result<Value, String> {
    use serde::de::DeserializeSeed;
    if text.len() > MAX_BYTES {
        return Err(format!("{} bytes, over the {MAX_BYTES} a descriptor may have", text.len()));
    }
    let values = std::cell::Cell::new(0);
    Bounded { values: &values, depth: 0 }
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| format!("not valid YAML: {e}"))
}

/// Builds a [`Value`] as the YAML deserializer walks the document (aliases replayed), counting
/// values and depth as it goes.
struct Bounded<'a> {
    values: &'a std::cell::Cell<usize>,
    depth: usize,
}

impl Bounded<'_> {
    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_VALUES {
            return Err(E::custom(format_args!(
                "more than {MAX_VALUES} values (aliases count as what they expand to); a descriptor is small"
            )));
        }
        Ok(())
    }

    fn nested<E: serde::de::Error>(&self) -> Result<Bounded<'_>, E> {
        self.count()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(Bounded { values: self.values, depth: self.depth + 1 })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded { values: inner.values, depth: inner.depth })? {
            items.push(v);
        }
        Ok(Value::Sequence(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let inner = self.nested()?;
        let mut out = serde_yaml_ng::Mapping::new();
        while let Some(k) = map.next_key_seed(Bounded { values: inner.values, depth: inner.depth })? {
            let v = map.next_value_seed(Bounded { values: inner.values, depth: inner.depth })?;
            if out.insert(k, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Mapping(out))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        Err(A::Error::custom("YAML tags (!name) are not allowed in a descriptor"))
    }
}
