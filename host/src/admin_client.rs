//! A client for a running hub's admin API, behind `roster components ...`: list the
//! components, swap one in from a file, roll one back.
//!
//! It speaks plain HTTP/1.1 over TCP (`http://` URLs only; the admin API is for operators
//! on the hub's network; put TLS in front and use curl for anything else), so the `roster`
//! binary needs no HTTP client library.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The URL is not `http://host:port`.
    #[error("the admin URL must look like http://host:port, not {0:?}")]
    Url(String),
    /// The hub could not be reached.
    #[error("cannot reach {url}: {error}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        error: std::io::Error,
    },
    /// The hub answered with an error status.
    #[error("HTTP {status}: {body}")]
    Refused {
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// The reply was not HTTP.
    #[error("the hub sent a reply that is not HTTP")]
    Garbled,
}

/// A hub's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    host: String,
    port: u16,
    token: String,
    timeout: Duration,
}

impl AdminClient {
    /// A client for `url` (`http://host:port`) with `token`.
    pub fn new(url: &str, token: &str) -> Result<Self, AdminError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| AdminError::Url(url.to_owned()))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse().map_err(|_| AdminError::Url(url.to_owned()))?,
            ),
            None => (rest, 80),
        };
        if host.is_empty() || host.contains('/') {
            return Err(AdminError::Url(url.to_owned()));
        }
        Ok(AdminClient {
            host: host.to_owned(),
            port,
            token: token.to_owned(),
            // Compiling a new component takes well under a second; this is only a backstop.
            timeout: Duration::from_secs(60),
        })
    }

    /// `GET /admin/components`: the JSON listing.
    pub async fn list(&self) -> Result<String, AdminError> {
        self.send("GET", "/admin/components", &[]).await
    }

    /// `PUT /admin/components/{slot}` with `component`: the JSON result of the swap.
    pub async fn swap(&self, slot: &str, component: &[u8]) -> Result<String, AdminError> {
        self.send("PUT", &format!("/admin/components/{slot}"), component)
            .await
    }

    /// `POST /admin/components/{slot}/rollback`: the JSON result.
    pub async fn rollback(&self, slot: &str) -> Result<String, AdminError> {
        self.send("POST", &format!("/admin/components/{slot}/rollback"), &[])
            .await
    }

    async fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<String, AdminError> {
        let url = format!("http://{}:{}", self.host, self.port);
        let unreachable = |error| AdminError::Unreachable {
            url: url.clone(),
            error,
        };
        let exchange = async {
            let mut stream =
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.host,
                self.port,
                self.token,
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            .map_err(unreachable)?;
        let reply = String::from_utf8_lossy(&reply);
        let (head, body) = reply.split_once("\r\n\r\n").ok_or(AdminError::Garbled)?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or(AdminError::Garbled)?;
        if (200..300).contains(&status) {
            Ok(body.to_owned())
        } else {
            Err(AdminError::Refused {
                status,
                body: body.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only plain http://host:port URLs are accepted.
    #[test]
    fn urls() {
        let client = AdminClient::new("http://127.0.0.1:3000/", "t").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 3000));
        assert!(AdminClient::new("https://h:1", "t").is_err());
        assert!(AdminClient::new("http://h:port", "t").is_err());
        assert!(AdminClient::new("http://", "t").is_err());
    }
}
