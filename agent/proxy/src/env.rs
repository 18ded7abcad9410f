//! Reading configuration variables (the service units' environment file).

use std::net::SocketAddr;
use std::time::Duration;

/// A configuration variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {problem}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value (never a key: PEM variables are not checked here).
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A lookup where an empty value counts as unset.
pub(crate) struct Vars<F>(pub(crate) F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        name: &'static str,
        problem: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, EnvError> {
        self.get(name)
            .map(|v| {
                parse(v.trim()).ok_or(EnvError {
                    name,
                    value: v.clone(),
                    problem,
                })
            })
            .transpose()
    }

    pub(crate) fn bool(&self, name: &'static str) -> Result<Option<bool>, EnvError> {
        self.parse(name, "expected true or false", |v| match v {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })
    }

    pub(crate) fn count(&self, name: &'static str) -> Result<Option<usize>, EnvError> {
        self.parse(name, "expected a whole number", |v| v.parse().ok())
    }

    pub(crate) fn secs(&self, name: &'static str) -> Result<Option<Duration>, EnvError> {
        self.parse(name, "expected a whole number of seconds", |v| {
            v.parse().ok().map(Duration::from_secs)
        })
    }

    pub(crate) fn socket_addr(&self, name: &'static str) -> Result<Option<SocketAddr>, EnvError> {
        self.parse(
            name,
            "expected an IP address and port (127.0.0.1:3128, [::1]:3128)",
            |v| v.parse().ok(),
        )
    }

    pub(crate) fn port(&self, name: &'static str) -> Result<Option<u16>, EnvError> {
        self.parse(name, "expected a port number 1-65535", |v| {
            v.parse().ok().filter(|p| *p != 0)
        })
    }
}
