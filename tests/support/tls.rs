//! A throwaway CA and a server certificate (127.0.0.1 / localhost, or
//! the names a test serves, such as Docker Hub's in a private network).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and a certificate for 127.0.0.1 and `localhost`.
pub fn generate() -> TlsMaterial {
    generate_for(&["localhost"], &["127.0.0.1"])
}

/// A CA and a certificate for these DNS names and IP addresses.
pub fn generate_for(names: &[&str], addresses: &[&str]) -> TlsMaterial {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "registry-image test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    for address in addresses {
        params
            .subject_alt_names
            .push(SanType::IpAddress(address.parse().unwrap()));
    }
    let cert = params.signed_by(&key, &issuer).unwrap();
    TlsMaterial {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
