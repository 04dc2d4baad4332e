//! A TLS terminator for tests: a private CA, a server certificate it signs for 127.0.0.1 and
//! `localhost`, and a listener that decrypts and forwards every connection to an upstream
//! address, as a reverse proxy in front of MinIO would. The CA's PEM is what a user would put
//! in `AETHER_S3_CA_FILE`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tokio_rustls::rustls;

/// A CA and a server certificate it signed.
pub struct TestCa {
    pub ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Result<TestCa, rcgen::Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "aether test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}

/// Terminates TLS on 127.0.0.1 (ephemeral port) and forwards to `upstream`; stops when dropped.
pub struct Terminator {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Terminator {
    pub fn start(ca: &TestCa, upstream: SocketAddr) -> io::Result<Terminator> {
        let cert = rustls::pki_types::CertificateDer::from(ca.cert_der.clone());
        let key = rustls::pki_types::PrivateKeyDer::try_from(ca.key_der.clone())
            .map_err(io::Error::other)?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tls-terminator".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::spawn(async move {
                        loop {
                            let Ok((socket, _)) = listener.accept().await else {
                                continue;
                            };
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                // A client that rejects our certificate ends here.
                                let Ok(mut tls) = acceptor.accept(socket).await else {
                                    return;
                                };
                                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await
                                else {
                                    return;
                                };
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                            });
                        }
                    });
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Terminator {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
