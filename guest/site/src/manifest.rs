//! The site manifest (`assets/site.toml`): which host names get which resource. Read and checked at
//! build time by `build.rs`, which includes this file; the crate compiles it only for its tests.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The pages `page.rs` can render, by the name a manifest gives them.
pub const PAGES: &[&str] = &["home"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default = "standard_https_port")]
    pub https_port: u16,
    #[serde(rename = "resource", default)]
    pub resources: Vec<ResourceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceEntry {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub default: bool,
    /// A page rendered by `page.rs`, by name.
    pub page: Option<String>,
    /// A file under `assets/`, embedded in the component.
    pub file: Option<PathBuf>,
    pub content_type: Option<String>,
    /// How the page lists this resource.
    pub title: Option<String>,
}

fn standard_https_port() -> u16 {
    443
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{manifest}: cannot read it: {source}")]
    Unreadable {
        manifest: PathBuf,
        source: std::io::Error,
    },
    #[error("{manifest}: {message}")]
    Syntax { manifest: PathBuf, message: String },
    #[error("{manifest}: lists no [[resource]]; a site needs at least one")]
    Empty { manifest: PathBuf },
    #[error("{manifest}: {count} resources have `default = true`; mark exactly one")]
    DefaultCount { manifest: PathBuf, count: usize },
    #[error("{manifest}: resource {index} lists no hosts")]
    NoHosts { manifest: PathBuf, index: usize },
    #[error("{manifest}: host {host:?} is not a lower-case DNS name (letters, digits, '-', '.')")]
    BadHost { manifest: PathBuf, host: String },
    #[error("{manifest}: host {host:?} is listed twice; each name selects one resource")]
    DuplicateHost { manifest: PathBuf, host: String },
    #[error("{manifest}: resource {index} ({host}) needs exactly one of `page` or `file`")]
    PageOrFile {
        manifest: PathBuf,
        index: usize,
        host: String,
    },
    #[error("{manifest}: resource {index} ({host}) names page {page:?}; the pages are {PAGES:?}")]
    UnknownPage {
        manifest: PathBuf,
        index: usize,
        host: String,
        page: String,
    },
    #[error("{manifest}: resource {index} ({host}) is a file and needs a `content_type`")]
    NoContentType {
        manifest: PathBuf,
        index: usize,
        host: String,
    },
    #[error("{file}: listed in {manifest} but cannot be read: {source}")]
    MissingAsset {
        manifest: PathBuf,
        file: PathBuf,
        source: std::io::Error,
    },
}

impl Manifest {
    /// Reads and checks the manifest at `path`; files it names are resolved against its folder.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Unreadable {
            manifest: path.to_owned(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|error| ManifestError::Syntax {
            manifest: path.to_owned(),
            message: error.to_string(),
        })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// The folder that `file` entries are relative to.
    pub fn assets_dir(path: &Path) -> &Path {
        path.parent().unwrap_or(Path::new("."))
    }

    fn check(&self, path: &Path) -> Result<(), ManifestError> {
        let manifest = path.to_owned();
        if self.resources.is_empty() {
            return Err(ManifestError::Empty { manifest });
        }
        let count = self.resources.iter().filter(|r| r.default).count();
        if count != 1 {
            return Err(ManifestError::DefaultCount { manifest, count });
        }
        let mut seen = Vec::new();
        for (index, resource) in self.resources.iter().enumerate() {
            let Some(first) = resource.hosts.first() else {
                return Err(ManifestError::NoHosts { manifest, index });
            };
            let host = first.clone();
            for name in &resource.hosts {
                if !is_dns_name(name) {
                    return Err(ManifestError::BadHost {
                        manifest,
                        host: name.clone(),
                    });
                }
                if seen.contains(&name) {
                    return Err(ManifestError::DuplicateHost {
                        manifest,
                        host: name.clone(),
                    });
                }
                seen.push(name);
            }
            match (&resource.page, &resource.file) {
                (Some(page), None) if !PAGES.contains(&page.as_str()) => {
                    let page = page.clone();
                    return Err(ManifestError::UnknownPage {
                        manifest,
                        index,
                        host,
                        page,
                    });
                }
                (Some(_), None) => {}
                (None, Some(file)) => {
                    if resource.content_type.is_none() {
                        return Err(ManifestError::NoContentType {
                            manifest,
                            index,
                            host,
                        });
                    }
                    let file = Self::assets_dir(path).join(file);
                    if let Err(source) = std::fs::File::open(&file) {
                        return Err(ManifestError::MissingAsset {
                            manifest,
                            file,
                            source,
                        });
                    }
                }
                _ => {
                    return Err(ManifestError::PageOrFile {
                        manifest,
                        index,
                        host,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Lower-case LDH labels: what an SNI name or Host header is compared against, case-folded.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as a manifest in a fresh folder with one asset, `a.pdf`, and loads it.
    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let dir = std::env::temp_dir().join(format!(
            "tls-site-manifest-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.pdf"), b"%PDF-1.4").unwrap();
        std::fs::write(dir.join("site.toml"), text).unwrap();
        let result = Manifest::load(&dir.join("site.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    const PAGE: &str = "[[resource]]\nhosts = [\"a.test\"]\npage = \"home\"\n";

    #[test]
    fn the_projects_own_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/site.toml");
        let manifest = Manifest::load(&path).unwrap();
        assert!(
            manifest.resources.len() >= 3,
            "the page and at least two papers"
        );
    }

    #[test]
    fn a_valid_manifest_loads() {
        let text = format!(
            "https_port = 8443\n{PAGE}default = true\n[[resource]]\nhosts = [\"b.test\"]\n\
             file = \"a.pdf\"\ncontent_type = \"application/pdf\"\n"
        );
        let manifest = load(&text).unwrap();
        assert_eq!(manifest.https_port, 8443);
        assert_eq!(manifest.resources.len(), 2);
        assert_eq!(manifest.resources[1].title, None, "a title is optional");
    }

    #[test]
    fn exactly_one_default() {
        let none = load(PAGE).unwrap_err();
        assert!(
            matches!(none, ManifestError::DefaultCount { count: 0, .. }),
            "{none}"
        );
        let text = format!(
            "{PAGE}default = true\n{}default = true\n",
            PAGE.replace("a.test", "b.test")
        );
        let two = load(&text).unwrap_err();
        assert!(
            matches!(two, ManifestError::DefaultCount { count: 2, .. }),
            "{two}"
        );
    }

    #[test]
    fn a_missing_asset_is_named() {
        let text = "[[resource]]\nhosts = [\"a.test\"]\nfile = \"gone.pdf\"\n\
                    content_type = \"application/pdf\"\ndefault = true\n";
        let error = load(text).unwrap_err();
        assert!(matches!(error, ManifestError::MissingAsset { .. }));
        assert!(error.to_string().contains("gone.pdf"), "{error}");
        assert!(error.to_string().contains("site.toml"), "{error}");
    }

    #[test]
    fn a_host_listed_twice_is_refused() {
        let text = format!("{PAGE}default = true\n{}", PAGE);
        assert!(matches!(
            load(&text).unwrap_err(),
            ManifestError::DuplicateHost { .. }
        ));
    }

    #[test]
    fn host_names_must_be_lower_case_dns_names() {
        for bad in ["A.test", "a..test", "-a.test", "a_b.test", "a.test:443", ""] {
            let text =
                format!("[[resource]]\nhosts = [{bad:?}]\npage = \"home\"\ndefault = true\n");
            assert!(
                matches!(load(&text).unwrap_err(), ManifestError::BadHost { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_resource_is_a_page_or_a_file() {
        let both = "[[resource]]\nhosts = [\"a.test\"]\npage = \"home\"\nfile = \"a.pdf\"\n\
                    content_type = \"application/pdf\"\ndefault = true\n";
        assert!(matches!(
            load(both).unwrap_err(),
            ManifestError::PageOrFile { .. }
        ));
        let neither = "[[resource]]\nhosts = [\"a.test\"]\ndefault = true\n";
        assert!(matches!(
            load(neither).unwrap_err(),
            ManifestError::PageOrFile { .. }
        ));
        let unknown = "[[resource]]\nhosts = [\"a.test\"]\npage = \"blog\"\ndefault = true\n";
        assert!(matches!(
            load(unknown).unwrap_err(),
            ManifestError::UnknownPage { .. }
        ));
        let untyped = "[[resource]]\nhosts = [\"a.test\"]\nfile = \"a.pdf\"\ndefault = true\n";
        assert!(matches!(
            load(untyped).unwrap_err(),
            ManifestError::NoContentType { .. }
        ));
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_file() {
        let error = load("[[resource]\n").unwrap_err();
        assert!(matches!(error, ManifestError::Syntax { .. }));
        assert!(error.to_string().contains("site.toml"));
        let typo = "[[resource]]\nhosts = [\"a.test\"]\npage = \"home\"\ndefualt = true\n";
        assert!(matches!(
            load(typo).unwrap_err(),
            ManifestError::Syntax { .. }
        ));
    }
}
