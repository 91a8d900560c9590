//! Pub/Sub resource names as settings take them: parsed once, when the
//! configuration is read, so that nothing later meets a malformed one.

use std::fmt;

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $id:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `projects/PROJECT/
            #[doc = $kind]
            /// /ID` (IDs of at least 3 characters, as Pub/Sub requires).
            pub fn parse(name: &str) -> Result<Self, String> {
                let parts: Vec<&str> = name.split('/').collect();
                match parts.as_slice() {
                    ["projects", project, kind, id]
                        if !project.is_empty() && *kind == $kind && id.len() >= 3 =>
                    {
                        Ok(Self(name.to_owned()))
                    }
                    _ => Err(format!(
                        "{name:?} is not of the form projects/PROJECT/{}/{} (IDs of at least 3 characters)",
                        $kind, $id
                    )),
                }
            }

            /// The full name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The project: `P` of `projects/P/…`.
            pub fn project(&self) -> &str {
                self.0.split('/').nth(1).unwrap_or_default()
            }

            /// The ID: the last part of the name.
            pub fn id(&self) -> &str {
                self.0.rsplit('/').next().unwrap_or_default()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }
    };
}

resource!(
    /// A topic, `projects/P/topics/T`.
    TopicName,
    "topics",
    "TOPIC"
);
resource!(
    /// A subscription, `projects/P/subscriptions/S`.
    SubscriptionName,
    "subscriptions",
    "SUBSCRIPTION"
);

impl TopicName {
    /// The subscription with this topic's ID and `suffix` in its project.
    pub fn subscription(&self, suffix: &str) -> SubscriptionName {
        SubscriptionName(format!(
            "projects/{}/subscriptions/{}{suffix}",
            self.project(),
            self.id()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_split() {
        let s = SubscriptionName::parse("projects/p1/subscriptions/sub").expect("valid");
        assert_eq!((s.project(), s.id()), ("p1", "sub"));
        for bad in [
            "sub",
            "projects/p1/topics/sub",
            "projects//subscriptions/sub",
            "projects/p/subscriptions/ab",
            "projects/p/subscriptions/a/b",
        ] {
            assert!(SubscriptionName::parse(bad).is_err(), "{bad}");
        }
        let t = TopicName::parse("projects/q/topics/dead").expect("valid");
        assert_eq!(
            t.subscription("-sub").as_str(),
            "projects/q/subscriptions/dead-sub"
        );
    }
}
