//! `CHATWORKER_<SECTION>__<KEY>` environment variables as a figment
//! provider, read like TOML scalars.

/// Environment variables already stripped of the prefix, as a figment provider.
pub(super) struct EnvList(pub(super) Vec<(String, String)>);

impl figment::Provider for EnvList {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
            // Parsed like TOML scalars: "64" is a number, "true" a boolean.
            let Ok(value) = value.parse::<figment::value::Value>();
            insert_nested(&mut dict, &path, value);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_nested(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}
