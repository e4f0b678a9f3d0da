//! The one error type the script's Rust functions raise into Lua, shared by
//! the sandbox, the libraries and the string patterns.

/// An error a Rust function raises into the script. Redis raises a table for
/// a redis.call error and a message for the rest; mlua raises a Rust value,
/// which the handler and the protected calls of the prelude turn back into
/// Redis's form (`as_lua_error`).
#[derive(Debug, Clone)]
pub enum Raised {
    /// `{err=...}`.
    Table(String),
    /// A plain Lua error message.
    Message(String),
}

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Raised::Table(text) | Raised::Message(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Raised {}

impl Raised {
    pub fn table(text: &str) -> mlua::Error {
        mlua::Error::external(Raised::Table(text.to_string()))
    }

    pub fn message(text: impl Into<String>) -> mlua::Error {
        mlua::Error::external(Raised::Message(text.into()))
    }

    /// The `Raised` inside an mlua error, if that is what it carries.
    pub(super) fn within(e: &mlua::Error) -> Option<&Raised> {
        match e {
            mlua::Error::ExternalError(inner) => inner.downcast_ref::<Raised>(),
            mlua::Error::CallbackError { cause, .. } => Raised::within(cause),
            _ => None,
        }
    }
}
