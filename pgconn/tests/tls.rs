//! TLS against a real PostgreSQL with its own certificate authority.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

#[tokio::test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn sslmodes_against_a_server_with_a_private_ca() {
    let server = tokio::task::spawn_blocking(|| {
        pgembed::PgServer::start(pgembed::Options {
            ephemeral: true,
            ..Default::default()
        })
    })
    .await
    .expect("join")
    .expect("server");
    let dir = server.dir().to_path_buf();

    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let owner = std::fs::metadata(&dir).expect("meta");
    for (name, pem) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }
    let certs = tempfile::tempdir().expect("tmp");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let other_ca = CertificateParams::new(Vec::<String>::new())
        .expect("p")
        .self_signed(&KeyPair::generate().expect("k"))
        .expect("c");
    let wrong_ca = certs.path().join("wrong.pem");
    std::fs::write(&wrong_ca, other_ca.pem()).expect("write");

    let (admin, _h) = pgconn::connect(&server.url("postgres"))
        .await
        .expect("plain connect");
    // One statement per call: a multi-statement string runs as one transaction.
    for sql in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            dir.join("server.crt").display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            dir.join("server.key").display()
        ),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        admin.batch_execute(&sql).await.expect("enable ssl");
    }

    let encrypted = |url: String| async move {
        let (c, _h) = pgconn::connect(&url).await?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok::<bool, pgconn::Error>(row.get(0))
    };
    let base = server.url("postgres");
    // pg_reload_conf is asynchronous: wait until the server offers TLS.
    let start = std::time::Instant::now();
    while !encrypted(format!("{base}?sslmode=require"))
        .await
        .unwrap_or(false)
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "server never offered TLS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        encrypted(format!("{base}?sslmode=prefer"))
            .await
            .expect("prefer"),
        "prefer uses TLS when offered"
    );
    assert!(!encrypted(format!("{base}?sslmode=disable"))
        .await
        .expect("disable"));
    assert!(encrypted(format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ))
    .await
    .expect("verified against the CA"));
    let err = encrypted(format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        wrong_ca.display()
    ))
    .await
    .expect_err("wrong CA refused");
    assert!(matches!(err, pgconn::Error::Db(_)), "{err}");
    let err = encrypted(format!("{base}?sslmode=verify-full"))
        .await
        .expect_err("not a public CA");
    assert!(matches!(err, pgconn::Error::Db(_)), "{err}");
}
