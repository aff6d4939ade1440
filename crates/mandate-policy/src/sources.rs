//! The text a policy set is compiled from: one Cedar schema plus policy files.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::PolicyError;

/// The starter set's README, for `mandate policy init`.
pub const STARTER_README: &str = include_str!("../../../policies/README.md");

/// The starter set's policy unit tests, for `mandate policy init` and `mandate policy test`.
pub const STARTER_TESTS: &str = include_str!("../../../policies/tests.toml");

const STARTER_SCHEMA: (&str, &str) = ("schema.cedarschema", include_str!("../../../policies/schema.cedarschema"));
const STARTER_POLICIES: [(&str, &str); 2] =
    [("agents.cedar", include_str!("../../../policies/agents.cedar")), ("guards.cedar", include_str!("../../../policies/guards.cedar"))];

const POLICY_EXT: &str = "cedar";
const SCHEMA_EXT: &str = "cedarschema";

/// A policy set as text: one Cedar schema and the policy files, each with its file name.
///
/// File names appear in diagnostics and in default policy ids (`<file>#<n>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySources {
    /// The schema's file name, e.g. `schema.cedarschema`.
    pub schema_file: String,
    /// The schema, in Cedar schema syntax.
    pub schema: String,
    /// `(file name, text)` of each policy file.
    pub policies: Vec<(String, String)>,
}

impl PolicySources {
    /// Sources from already loaded text.
    pub fn new(schema_file: impl Into<String>, schema: impl Into<String>, policies: Vec<(String, String)>) -> Self {
        PolicySources { schema_file: schema_file.into(), schema: schema.into(), policies }
    }

    /// Reads `dir`: every `*.cedar` file, sorted by name, and exactly one `*.cedarschema`
    /// file. Other files (a README, test cases) are ignored; subdirectories are not read.
    pub fn from_dir(dir: &Path) -> Result<Self, PolicyError> {
        let listing = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir, &e))?;
        let mut policy_files = Vec::new();
        let mut schema_files = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| PolicyError::io(dir, &e))?;
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some(POLICY_EXT) => policy_files.push(name),
                Some(SCHEMA_EXT) => schema_files.push(name),
                _ => {}
            }
        }
        schema_files.sort();
        let schema_file = match schema_files.as_slice() {
            [] => {
                return Err(PolicyError::NoSchema { dir: dir.display().to_string() });
            }
            [one] => one.clone(),
            several => {
                return Err(PolicyError::SeveralSchemas { dir: dir.display().to_string(), names: several.join(", ") });
            }
        };
        policy_files.sort();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, &e))
        };
        let schema = read(&schema_file)?;
        let mut policies = Vec::with_capacity(policy_files.len());
        for name in policy_files {
            let text = read(&name)?;
            policies.push((name, text));
        }
        Ok(PolicySources { schema_file, schema, policies })
    }

    /// The starter policy set that ships with Mandate (see `policies/README.md`).
    pub fn starter() -> Self {
        PolicySources {
            schema_file: STARTER_SCHEMA.0.to_owned(),
            schema: STARTER_SCHEMA.1.to_owned(),
            policies: STARTER_POLICIES.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())).collect(),
        }
    }

    /// Writes the schema and policy files into `dir`, creating it if needed. Refuses to
    /// overwrite an existing file, and writes nothing if any target exists.
    pub fn write_to(&self, dir: &Path) -> Result<(), PolicyError> {
        check_file_name(&self.schema_file, SCHEMA_EXT)?;
        for (name, _) in &self.policies {
            check_file_name(name, POLICY_EXT)?;
        }
        let files = self.files();
        for (name, _) in &files {
            let path = dir.join(name);
            if path.exists() {
                return Err(PolicyError::FileExists { path: path.display().to_string() });
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| PolicyError::io(dir, &e))?;
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| PolicyError::io(&path, &e))?;
        }
        Ok(())
    }

    /// `sha256:<hex>` over a canonical encoding of every `(file name, text)` pair, the schema
    /// included. Policy file order does not matter; any change to a name or a byte does.
    pub fn version(&self) -> String {
        let mut policies: Vec<&(String, String)> = self.policies.iter().collect();
        policies.sort();
        let mut hasher = Sha256::new();
        hasher.update(b"mandate-policy-sources-v1\0");
        let mut put = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        put(b"schema");
        put(self.schema_file.as_bytes());
        put(self.schema.as_bytes());
        for (name, text) in policies {
            put(b"policy");
            put(name.as_bytes());
            put(text.as_bytes());
        }
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// Every file, schema first.
    fn files(&self) -> Vec<(&str, &str)> {
        std::iter::once((self.schema_file.as_str(), self.schema.as_str()))
            .chain(self.policies.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .collect()
    }
}

/// A file name `write_to` may create: one plain path segment with the expected extension.
fn check_file_name(name: &str, ext: &str) -> Result<(), PolicyError> {
    let path = Path::new(name);
    let plain = path.file_name().and_then(|n| n.to_str()) == Some(name) && !name.starts_with('.') && !name.contains(['/', '\\']);
    let right_ext = path.extension().and_then(|e| e.to_str()) == Some(ext);
    if plain && right_ext { Ok(()) } else { Err(PolicyError::InvalidFileName(name.to_owned())) }
}
