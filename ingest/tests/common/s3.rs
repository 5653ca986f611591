//! moto's S3 server, a real S3 protocol endpoint run locally (`pip install 'moto[server]'`).

use super::wait_until;

/// moto's S3 server on a free port, or `None` (said) where moto is not installed.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn s3_server() -> Option<S3Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        assert!(std::env::var_os("CI").is_none(), "CI installs moto[server]");
        pgembed::say_skipped(
            "ingest_daily",
            "moto_server is not installed (pip install 'moto[server]')",
        );
        return None;
    };
    let server = S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let (http, up) = (&reqwest::Client::new(), &server.endpoint);
    wait_until("moto's S3 server", || async move {
        http.put(format!("{up}/research"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    Some(server)
}

/// A bucket `name` (created if missing) on `s3`, under the prefix `depthbook`.
pub fn bucket(s3: &S3Server, name: &str) -> export::bucket::Bucket {
    export::bucket::Bucket::from_url_with(
        &format!("s3://{name}/depthbook"),
        [
            ("aws_endpoint", s3.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ],
    )
    .expect("bucket")
}
