//! Typed card actions: one type names the action and carries its
//! parameters, so the button that sends a click and the handler that
//! receives it cannot disagree on either.
//!
//! Chat carries action parameters as string pairs. A [`CardAction`] is a
//! flat struct whose fields are strings, numbers, booleans, unit enums or
//! options of those; it is written into the pairs on the button and read
//! back, with numbers parsed, when the click arrives.
//!
//! ```
//! use chatworker::action::{CardAction, from_parameters, to_parameters};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Close {
//!     ticket: u32,
//!     reason: Option<String>,
//! }
//!
//! impl CardAction for Close {
//!     const NAME: &'static str = "close_ticket";
//! }
//!
//! # fn main() -> Result<(), chatworker::action::ActionError> {
//! let pairs = to_parameters(&Close { ticket: 42, reason: None })?;
//! assert_eq!(pairs, [("ticket".to_owned(), "42".to_owned())]);
//! let back: Close = from_parameters(&pairs.into_iter().collect())?;
//! assert_eq!(back, Close { ticket: 42, reason: None });
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use std::collections::BTreeMap;

/// A card action with typed parameters. `NAME` is the action's function
/// name on the button and the key the handler is registered under.
pub trait CardAction: Serialize + DeserializeOwned + Send + 'static {
    /// The function name Chat sends back on a click (`actionMethodName` or
    /// `invokedFunction`).
    const NAME: &'static str;
}

/// Parameters that cannot be written to or read from Chat's string pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("card action parameters: {0}")]
pub struct ActionError(String);

impl de::Error for ActionError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Writes `parameters` (a flat struct) as Chat's key/value pairs. `None`
/// fields are left out.
pub fn to_parameters<P: Serialize>(parameters: &P) -> Result<Vec<(String, String)>, ActionError> {
    let value = serde_json::to_value(parameters).map_err(|e| ActionError(e.to_string()))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(ActionError(format!(
            "expected a struct with named fields, got {value}"
        )));
    };
    let mut pairs = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            nested => {
                return Err(ActionError(format!(
                    "field {key:?} is {nested}; parameters are flat (strings, numbers, booleans)"
                )));
            }
        };
        pairs.push((key, text));
    }
    Ok(pairs)
}

/// Reads a click's parameters into `P`, parsing numbers and booleans.
pub fn from_parameters<P: DeserializeOwned>(
    parameters: &BTreeMap<String, String>,
) -> Result<P, ActionError> {
    let pairs = parameters
        .iter()
        .map(|(k, v)| (k.as_str(), Text(v.as_str())));
    P::deserialize(de::value::MapDeserializer::new(pairs))
}

/// One parameter's value: a string that numbers and booleans parse from.
struct Text<'a>(&'a str);

impl<'de> IntoDeserializer<'de, ActionError> for Text<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ActionError> {
            match self.0.trim().parse() {
                Ok(v) => visitor.$visit(v),
                Err(e) => Err(ActionError(format!("{:?}: {e}", self.0))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Text<'de> {
    type Error = ActionError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ActionError> {
        visitor.visit_borrowed_str(self.0)
    }

    parse! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64,
        deserialize_f32 => visit_f32, deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ActionError> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ActionError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ActionError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Priority {
        Low,
        High,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct All {
        n: u32,
        neg: i64,
        ratio: f64,
        on: bool,
        word: String,
        digits: String,
        priority: Priority,
        maybe: Option<u8>,
        absent: Option<String>,
    }

    #[test]
    fn parameters_round_trip_through_string_pairs() {
        let all = All {
            n: 42,
            neg: -7,
            ratio: 0.5,
            on: true,
            word: "hi there".into(),
            digits: "0042".into(),
            priority: Priority::High,
            maybe: Some(3),
            absent: None,
        };
        let pairs = to_parameters(&all).expect("flat");
        assert!(pairs.iter().all(|(k, _)| k != "absent"));
        assert!(
            pairs.contains(&("digits".into(), "0042".into())),
            "strings stay strings"
        );
        let back: All = from_parameters(&pairs.into_iter().collect()).expect("reads back");
        assert_eq!(back, all);
    }

    #[test]
    fn bad_parameters_say_which_and_why() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Close {
            ticket: u32,
        }
        let map = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let e = from_parameters::<Close>(&map("ticket", "forty-two")).expect_err("not a number");
        assert!(e.to_string().contains("forty-two"), "{e}");
        let e = from_parameters::<Close>(&BTreeMap::new()).expect_err("missing");
        assert!(e.to_string().contains("ticket"), "{e}");
        #[derive(Serialize)]
        struct Nested {
            inner: Vec<u8>,
        }
        let e = to_parameters(&Nested { inner: vec![1] }).expect_err("nested");
        assert!(e.to_string().contains("inner"), "{e}");
        assert!(to_parameters(&3).is_err());
    }
}
