//! Who may use the client port: Redis's `requirepass`, for the one user Redis
//! calls `default`.
//!
//! The password comes from a file (`--password-file`) or the environment
//! (`EXAMPLE_ONDISK_PASSWORD`), never from a bare command-line value that any
//! user of the machine could read in the process list. The prompt needs none:
//! whoever types there already runs the replica.

use std::path::Path;

/// The variable a password may come from instead of a file.
pub const PASSWORD_VARIABLE: &str = "EXAMPLE_ONDISK_PASSWORD";

/// The only user name there is, as in a Redis without ACL users.
const DEFAULT_USER: &[u8] = b"default";

pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
    authenticate the client and select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_PASSWORD_SET: &str = "ERR AUTH <password> called without any password configured for \
    the default user. Are you sure your configuration is correct?";

/// The password clients must give before anything else.
pub struct Password(Vec<u8>);

impl Password {
    /// The password in `file` (one line; the line ending is not part of it),
    /// else in the environment variable, else none.
    pub fn configured(file: Option<&Path>) -> Result<Option<Password>, String> {
        if let Some(path) = file {
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
            let line = text.strip_suffix(b"\n").unwrap_or(&text);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return Password::new(
                line.to_vec(),
                &format!("--password-file {}", path.display()),
            )
            .map(Some);
        }
        match std::env::var_os(PASSWORD_VARIABLE) {
            None => Ok(None),
            Some(value) => Password::new(value.into_encoded_bytes(), PASSWORD_VARIABLE).map(Some),
        }
    }

    fn new(bytes: Vec<u8>, source: &str) -> Result<Password, String> {
        if bytes.is_empty() {
            return Err(format!("{source} holds an empty password"));
        }
        if bytes.contains(&b'\n') {
            return Err(format!("{source} holds more than one line"));
        }
        Ok(Password(bytes))
    }

    /// The password itself, for a client of this port (`example-ondisk backup`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Compares in time that does not depend on where the first difference
    /// is, so the answer's timing tells an attacker nothing about the prefix.
    fn matches(&self, offered: &[u8]) -> bool {
        let difference = self
            .0
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0 && self.0.len() == offered.len()
    }
}

/// Judges `AUTH [user] password` (or HELLO's AUTH option, which always names
/// a user): `Err` holds Redis's error line.
pub fn check(
    required: Option<&Password>,
    user: Option<&[u8]>,
    offered: &[u8],
) -> Result<(), &'static str> {
    let user_known = user.is_none_or(|name| name == DEFAULT_USER);
    match (required, user) {
        // Without a password, AUTH of one word is a configuration mistake;
        // the default user takes any password, as Redis's `nopass` does.
        (None, None) => Err(NO_PASSWORD_SET),
        (None, Some(_)) if user_known => Ok(()),
        (Some(password), _) if user_known && password.matches(offered) => Ok(()),
        _ => Err(WRONGPASS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(text: &str) -> Password {
        Password::new(text.as_bytes().to_vec(), "test").unwrap()
    }

    #[test]
    fn only_the_default_user_with_the_password_gets_in() {
        let secret = password("s3cret");
        assert_eq!(check(Some(&secret), None, b"s3cret"), Ok(()));
        assert_eq!(check(Some(&secret), Some(b"default"), b"s3cret"), Ok(()));
        assert_eq!(check(Some(&secret), None, b"s3cre"), Err(WRONGPASS));
        assert_eq!(check(Some(&secret), None, b"s3cret!"), Err(WRONGPASS));
        assert_eq!(check(Some(&secret), None, b""), Err(WRONGPASS));
        assert_eq!(
            check(Some(&secret), Some(b"admin"), b"s3cret"),
            Err(WRONGPASS)
        );
    }

    #[test]
    fn without_a_password_auth_answers_as_redis_does() {
        assert_eq!(check(None, None, b"x"), Err(NO_PASSWORD_SET));
        assert_eq!(check(None, Some(b"default"), b"anything"), Ok(()));
        assert_eq!(check(None, Some(b"admin"), b"x"), Err(WRONGPASS));
    }

    #[test]
    fn a_password_file_is_one_line_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\r\n").unwrap();
        let read = Password::configured(Some(&path)).unwrap().unwrap();
        assert!(read.matches(b"hunter2"));
        std::fs::write(&path, "\n").unwrap();
        assert!(Password::configured(Some(&path))
            .err()
            .unwrap()
            .contains("empty password"));
        std::fs::write(&path, "a\nb\n").unwrap();
        assert!(Password::configured(Some(&path))
            .err()
            .unwrap()
            .contains("more than one line"));
        let missing = dir.path().join("missing");
        assert!(Password::configured(Some(&missing))
            .err()
            .unwrap()
            .starts_with("cannot read --password-file"));
    }
}
