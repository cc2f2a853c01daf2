//! `params.compression`: `keep` (the default: layers as stored, an
//! uncompressed docker-save layer gzipped), `gzip` or `zstd`: every tar
//! layer not already so is decompressed and compressed again on the way,
//! hashed in the same pass, deterministically (the same input gives the
//! same digest: gzip by the parallel writer, zstd single-threaded at one
//! level). Configs are untouched (their `diff_id`s name the uncompressed
//! tar); manifests are rewritten with the new layers and media types (a
//! Docker manifest with a zstd layer becomes OCI, which Docker's types
//! cannot label), and indexes with their new children.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::store::FileSlice;
use crate::image::compression::{Compression, decompress};
use crate::image::{Digest, media_type};

/// zstd's default level: several times faster than gzip to inflate, and
/// about as fast to write as our parallel gzip on two cores.
const ZSTD_LEVEL: i32 = 3;

/// What `params.compression` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    #[default]
    Keep,
    To(Compression),
}

impl LayerCompression {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "" | "keep" => LayerCompression::Keep,
            "gzip" => LayerCompression::To(Compression::Gzip),
            "zstd" => LayerCompression::To(Compression::Zstd),
            other => bail!("params.compression {other:?}: must be one of keep, gzip, zstd"),
        })
    }
}

/// Whether a layer of this media type is a (maybe compressed) tar that may
/// be recompressed; anything else (attestations, foreign layers, artifact
/// files) travels as it is.
pub fn is_tar_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        media_type::OCI_LAYER_TAR
            | media_type::OCI_LAYER_GZIP
            | media_type::OCI_LAYER_ZSTD
            | media_type::DOCKER_LAYER_GZIP
            | media_type::DOCKER_LAYER_TAR
    )
}

/// Writes `slice`'s tar compressed as `to`, whatever it holds now; `read`
/// is told of each block of `slice` consumed.
pub fn recompress(
    slice: &FileSlice,
    to: Compression,
    out: &mut impl Write,
    read: impl Fn(u64),
) -> io::Result<()> {
    let counted = Counted {
        inner: slice.open()?,
        read,
    };
    let mut tar = decompress(BufReader::with_capacity(256 << 10, counted))?;
    match to {
        Compression::Gzip => super::gzip::compress(&mut tar, out, super::gzip::cores(), |_| {}),
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            io::copy(&mut tar, &mut encoder)?;
            encoder.finish()?;
            Ok(())
        }
        Compression::None => io::copy(&mut tar, out).map(|_| ()),
    }
}

struct Counted<R, F> {
    inner: R,
    read: F,
}

impl<R: Read, F: Fn(u64)> Read for Counted<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.read)(n as u64);
        Ok(n)
    }
}

/// A layer as pushed: its new digest and size, and its compression.
#[derive(Clone, Debug)]
pub struct NewLayer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

/// A manifest as rewritten: its bytes, media type and digest.
pub struct Rewritten {
    pub bytes: Vec<u8>,
    pub media_type: String,
}

/// An image manifest with its layers replaced as `layers` says (old digest
/// → new layer) and their media types set; `None` when nothing changed.
pub fn rewrite_image(
    bytes: &[u8],
    declared_type: &str,
    layers: &HashMap<Digest, NewLayer>,
) -> anyhow::Result<Option<Rewritten>> {
    let mut manifest: Value = serde_json::from_slice(bytes).context("a manifest to rewrite")?;
    let Some(list) = manifest["layers"].as_array_mut() else {
        return Ok(None);
    };
    let mut changed = false;
    let mut zstd = false;
    for layer in list.iter_mut() {
        let Some(new) = layer["digest"]
            .as_str()
            .and_then(|d| d.parse::<Digest>().ok())
            .and_then(|d| layers.get(&d))
        else {
            continue;
        };
        layer["digest"] = json!(new.digest.to_string());
        layer["size"] = json!(new.size);
        layer["mediaType"] = json!(match new.compression {
            Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            Compression::Gzip => media_type::OCI_LAYER_GZIP,
            Compression::None => media_type::OCI_LAYER_TAR,
        });
        zstd |= new.compression == Compression::Zstd;
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    // Docker and OCI name the same layer kinds; a manifest's layers must
    // use its own family's names.
    const SAME_KINDS: [(&str, &str); 2] = [
        (media_type::DOCKER_LAYER_GZIP, media_type::OCI_LAYER_GZIP),
        (media_type::DOCKER_LAYER_TAR, media_type::OCI_LAYER_TAR),
    ];
    let docker = declared_type == media_type::DOCKER_MANIFEST;
    // A Docker manifest stays one, unless it now has zstd layers, which
    // Docker has no type for: then the whole manifest becomes OCI.
    let stays_docker = docker && !zstd;
    if docker {
        for layer in list.iter_mut() {
            for (docker_type, oci_type) in SAME_KINDS {
                let (from, to) = if stays_docker {
                    (oci_type, docker_type)
                } else {
                    (docker_type, oci_type)
                };
                if layer["mediaType"] == from {
                    layer["mediaType"] = json!(to);
                }
            }
        }
    }
    if docker && !stays_docker {
        manifest["config"]["mediaType"] = json!(media_type::OCI_CONFIG);
    }
    let media_type = if stays_docker {
        media_type::DOCKER_MANIFEST
    } else {
        media_type::OCI_MANIFEST
    };
    manifest["mediaType"] = json!(media_type);
    Ok(Some(Rewritten {
        bytes: serde_json::to_vec(&manifest)?,
        media_type: media_type.to_owned(),
    }))
}

/// An index with the children `children` names (old digest → new digest,
/// size, media type) replaced; `None` when none changed.
pub fn rewrite_index(
    bytes: &[u8],
    children: &HashMap<Digest, (Digest, u64, String)>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut index: Value = serde_json::from_slice(bytes).context("an index to rewrite")?;
    let Some(list) = index["manifests"].as_array_mut() else {
        return Ok(None);
    };
    let mut changed = false;
    for child in list.iter_mut() {
        let Some((digest, size, media_type)) = child["digest"]
            .as_str()
            .and_then(|d| d.parse::<Digest>().ok())
            .and_then(|d| children.get(&d))
        else {
            continue;
        };
        child["digest"] = json!(digest.to_string());
        child["size"] = json!(size);
        child["mediaType"] = json!(media_type);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(serde_json::to_vec(&index)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(LayerCompression::parse("").unwrap(), LayerCompression::Keep);
        assert_eq!(
            LayerCompression::parse("zstd").unwrap(),
            LayerCompression::To(Compression::Zstd)
        );
        assert!(LayerCompression::parse("brotli").is_err());
    }

    #[test]
    fn a_docker_manifest_with_a_zstd_layer_becomes_oci() {
        let old = Digest::sha256_of(b"old");
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media_type::DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                       "digest": Digest::sha256_of(b"{}").to_string()},
            "layers": [{"mediaType": media_type::DOCKER_LAYER_GZIP, "size": 3, "digest": old.to_string()}],
        });
        let new = NewLayer {
            digest: Digest::sha256_of(b"new"),
            size: 9,
            compression: Compression::Zstd,
        };
        let layers = HashMap::from([(old, new.clone())]);
        let rewritten = rewrite_image(
            &serde_json::to_vec(&manifest).unwrap(),
            media_type::DOCKER_MANIFEST,
            &layers,
        )
        .unwrap()
        .unwrap();
        assert_eq!(rewritten.media_type, media_type::OCI_MANIFEST);
        let value: Value = serde_json::from_slice(&rewritten.bytes).unwrap();
        assert_eq!(value["config"]["mediaType"], media_type::OCI_CONFIG);
        assert_eq!(value["layers"][0]["mediaType"], media_type::OCI_LAYER_ZSTD);
        assert_eq!(value["layers"][0]["digest"], new.digest.to_string());
        assert_eq!(value["layers"][0]["size"], 9);
    }

    #[test]
    fn recompressing_is_deterministic_and_lossless() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"a tar, or as good as one, for this test".repeat(1000);
        let path = dir.path().join("layer");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let slice = FileSlice {
            path: std::sync::Arc::new(path.clone()),
            offset: 0,
            len: std::fs::metadata(&path).unwrap().len(),
        };
        let mut one = Vec::new();
        recompress(&slice, Compression::Zstd, &mut one, |_| {}).unwrap();
        let mut two = Vec::new();
        recompress(&slice, Compression::Zstd, &mut two, |_| {}).unwrap();
        assert_eq!(one, two);
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), tar);
    }
}
