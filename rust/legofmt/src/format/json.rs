//! JSON rules of `spec/lgn.md` section 3 that serde's derived parsing does not enforce on its
//! own: no object has the same member name twice, at any depth, members a reader ignores
//! included. (serde_json already rejects lone surrogates, `NaN`/`Infinity` literals and nesting
//! deeper than its recursion limit; integer-typed fields already reject fractions and
//! exponents.)

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Checks that no object in the JSON text `text` repeats a member name; the error says which.
/// Other syntax errors are left to the parser that reads the text for real.
pub(crate) fn check_unique_members(text: &str) -> std::result::Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    match UniqueMembers::deserialize(&mut de) {
        Ok(_) => Ok(()),
        Err(e) if e.is_data() => Err(e.to_string()),
        Err(_) => Ok(()),
    }
}

/// A JSON value walked only to check its objects' member names.
struct UniqueMembers;

impl<'de> Deserialize<'de> for UniqueMembers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = UniqueMembers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut s: A,
    ) -> std::result::Result<UniqueMembers, A::Error> {
        while s.next_element::<UniqueMembers>()?.is_some() {}
        Ok(UniqueMembers)
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut m: A,
    ) -> std::result::Result<UniqueMembers, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = m.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let _ = m.next_value::<IgnoredAny>()?;
                return Err(de::Error::custom(format!("duplicate member `{key}`")));
            }
            m.next_value::<UniqueMembers>()?;
        }
        Ok(UniqueMembers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert!(check_unique_members(r#"{"a": 1, "b": [{"c": 2, "d": {"e": null}}]}"#).is_ok());
        let top = check_unique_members(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(top.contains("duplicate member `a`"), "{top}");
        let deep = check_unique_members(r#"{"x": [1, {"y": {"z": 1, "z": 1}}]}"#).unwrap_err();
        assert!(deep.contains("duplicate member `z`"), "{deep}");
        // The same name in two different objects is fine.
        assert!(check_unique_members(r#"[{"a": 1}, {"a": 1}]"#).is_ok());
    }

    #[test]
    fn syntax_errors_are_left_to_the_real_parser() {
        assert!(check_unique_members("{\"a\": ").is_ok());
        assert!(check_unique_members("not json").is_ok());
    }
}
