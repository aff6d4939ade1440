use std::path::Path;

/// Why a policy directory, entity file or case file could not be used.
///
/// Evaluation never returns this: a decision that cannot be made is a deny (see
/// [`Decision`](crate::Decision)). Every variant has a stable snake_case [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file or directory could not be read or written.
    #[error("cannot read or write `{path}`: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// A policy directory without a schema.
    #[error("no `.cedarschema` file in `{dir}`")]
    NoSchema {
        /// The directory.
        dir: String,
    },
    /// A policy directory with more than one schema.
    #[error("several `.cedarschema` files in `{dir}`: {names}; keep exactly one")]
    SeveralSchemas {
        /// The directory.
        dir: String,
        /// The schema files found.
        names: String,
    },
    /// Writing a policy set would overwrite a file.
    #[error("`{path}` already exists; refusing to overwrite it")]
    FileExists {
        /// The existing file.
        path: String,
    },
    /// A policy set's file name is not a plain `.cedar` or `.cedarschema` name.
    #[error("invalid policy file name `{0}`: use a plain file name ending in `.cedar` or `.cedarschema`")]
    InvalidFileName(String),
    /// Entity JSON that Cedar refuses.
    #[error("invalid entity data: {0}")]
    InvalidEntities(String),
    /// A case file that is not valid TOML or has no cases.
    #[error("invalid case file: {0}")]
    InvalidCases(String),
    /// One case in a case file is malformed.
    #[error("case `{case}`: {message}")]
    InvalidCase {
        /// The case's name, or `#<n>` when it has none.
        case: String,
        /// What is wrong with it.
        message: String,
    },
}

impl PolicyError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Io { .. } => "policy_io",
            PolicyError::NoSchema { .. } => "policy_no_schema",
            PolicyError::SeveralSchemas { .. } => "policy_several_schemas",
            PolicyError::FileExists { .. } => "policy_file_exists",
            PolicyError::InvalidFileName(_) => "invalid_policy_file_name",
            PolicyError::InvalidEntities(_) => "invalid_entities",
            PolicyError::InvalidCases(_) => "invalid_cases",
            PolicyError::InvalidCase { .. } => "invalid_case",
        }
    }

    pub(crate) fn io(path: &Path, err: &std::io::Error) -> Self {
        PolicyError::Io { path: path.display().to_string(), message: io_message(err) }
    }
}

/// An I/O error's message without the OS error number, lowercased like every other message.
fn io_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(i) => text.get(..i).unwrap_or(&text).to_owned(),
        None => text,
    };
    lowercase_first(&text)
}

pub(crate) fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
