//! The network settings on the kernel command line, as the Linux microVM's /init and the
//! unikernel both read them: `tls_site.ip=ADDRESS/PREFIX`, `tls_site.gw=ADDRESS` or
//! `tls_site.gw=none`, each defaulting to qemu's user network (10.0.2.15/24, gateway 10.0.2.2).

use alloc::format;
use alloc::string::String;
use core::net::Ipv4Addr;

/// A parameter of ours that is malformed or unknown; the text says what was expected.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandLineError(pub String);

impl core::fmt::Display for CommandLineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for CommandLineError {}

/// The one interface's address, as the kernel command line gives it.
#[derive(Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl NetworkConfig {
    pub fn from_command_line(line: &str) -> Result<NetworkConfig, CommandLineError> {
        let mut config = NetworkConfig {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        };
        let bad = |parameter: &str, expected: &str| {
            CommandLineError(format!("{parameter}: expected {expected}"))
        };
        for parameter in line.split_ascii_whitespace() {
            if let Some(value) = parameter.strip_prefix("tls_site.ip=") {
                let expected = "tls_site.ip=ADDRESS/PREFIX, e.g. tls_site.ip=10.0.2.15/24";
                let (address, prefix) = value
                    .split_once('/')
                    .ok_or_else(|| bad(parameter, expected))?;
                config.address = address.parse().map_err(|_| bad(parameter, expected))?;
                config.prefix = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| bad(parameter, expected))?;
            } else if let Some(value) = parameter.strip_prefix("tls_site.gw=") {
                let expected = "tls_site.gw=ADDRESS or tls_site.gw=none";
                config.gateway = match value {
                    "none" => None,
                    address => Some(address.parse().map_err(|_| bad(parameter, expected))?),
                };
            } else if parameter.starts_with("tls_site.") {
                return Err(CommandLineError(format!(
                    "{parameter}: unknown; the parameters are tls_site.ip= and tls_site.gw="
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString as _;

    #[test]
    fn without_parameters_the_network_is_qemus_user_network() {
        let config = NetworkConfig::from_command_line("console=ttyS0 quiet").unwrap();
        assert_eq!(
            config,
            NetworkConfig {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2))
            }
        );
    }

    #[test]
    fn address_and_gateway_come_from_the_command_line() {
        let config = NetworkConfig::from_command_line(
            "console=ttyS0 tls_site.ip=192.0.2.7/28 tls_site.gw=none",
        )
        .unwrap();
        assert_eq!(
            config,
            NetworkConfig {
                address: Ipv4Addr::new(192, 0, 2, 7),
                prefix: 28,
                gateway: None
            }
        );
        let config = NetworkConfig::from_command_line("tls_site.gw=192.0.2.1").unwrap();
        assert_eq!(config.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn a_malformed_parameter_says_what_was_expected() {
        for line in [
            "tls_site.ip=10.0.2.15",
            "tls_site.ip=10.0.2.15/33",
            "tls_site.ip=ten/24",
            "tls_site.gw=x",
        ] {
            let error = NetworkConfig::from_command_line(line)
                .unwrap_err()
                .to_string();
            assert!(error.contains("expected tls_site."), "{line}: {error}");
        }
        let error = NetworkConfig::from_command_line("tls_site.address=1.2.3.4")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown"), "{error}");
    }
}
