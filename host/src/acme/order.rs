//! One order at the CA: the account (from the state directory, or registered), then one
//! certificate for every host name, each name proven by HTTP-01 on the port-80 side.

use super::AcmeError;
use super::state::StateDir;
use crate::log;
use crate::options::AcmeOptions;
use crate::redirect::Challenges;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use std::time::Duration;

/// The tokens of one order, withdrawn when the order ends however it ends.
struct OpenChallenges<'a> {
    challenges: &'a Challenges,
    tokens: Vec<String>,
}

impl OpenChallenges<'_> {
    fn open(&mut self, token: &str, key_authorization: &str) {
        self.challenges
            .tokens()
            .insert(token.to_owned(), key_authorization.to_owned());
        self.tokens.push(token.to_owned());
    }
}

impl Drop for OpenChallenges<'_> {
    fn drop(&mut self) {
        let mut open = self.challenges.tokens();
        for token in &self.tokens {
            open.remove(token);
        }
    }
}

/// The account from the state directory, or a new one registered and saved there.
pub(super) async fn account(options: &AcmeOptions, state: &StateDir) -> Result<Account, AcmeError> {
    let directory = &options.directory;
    let failed = |source| AcmeError::Account {
        directory: directory.clone(),
        source,
    };
    let builder = match &options.directory_ca {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    }
    .map_err(failed)?;
    if let Some(credentials) = state.account()? {
        return builder.from_credentials(credentials).await.map_err(failed);
    }
    let contacts: Vec<String> = options
        .contacts
        .iter()
        .map(|email| {
            if email.starts_with("mailto:") {
                email.clone()
            } else {
                format!("mailto:{email}")
            }
        })
        .collect();
    let contact: Vec<&str> = contacts.iter().map(String::as_str).collect();
    let new_account = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder
        .create(&new_account, directory.clone(), None)
        .await
        .map_err(failed)?;
    state.save_account(&credentials)?;
    log(format_args!(
        "acme: registered account {} at {directory}",
        account.id()
    ));
    Ok(account)
}

/// Orders one ECDSA P-256 certificate for every host name, answering HTTP-01 for each.
/// Returns the chain and the private key, in PEM.
pub(super) async fn order(
    account: &Account,
    hosts: &[String],
    challenges: &Challenges,
) -> Result<(String, String), AcmeError> {
    let names = hosts.join(",");
    let failed = |source| AcmeError::Order {
        names: names.clone(),
        source,
    };
    let identifiers: Vec<Identifier> = hosts
        .iter()
        .map(|host| Identifier::Dns(host.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(failed)?;
    log(format_args!(
        "acme: ordered a certificate for {names} at {}",
        order.url()
    ));

    let mut open = OpenChallenges {
        challenges,
        tokens: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(failed)?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => return Err(AcmeError::AuthorizationFailed { name, status }),
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or(AcmeError::NoHttp01(name))?;
        open.open(&challenge.token, challenge.key_authorization().as_str());
        challenge.set_ready().await.map_err(failed)?;
    }
    let patient = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order.poll_ready(&patient).await.map_err(failed)?;
    drop(open);
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| "no reason given".to_owned(), ToString::to_string);
        return Err(AcmeError::OrderFailed {
            names,
            status,
            detail,
        });
    }

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let request = rcgen::CertificateParams::new(hosts.to_vec())?.serialize_request(&key)?;
    order.finalize_csr(request.der()).await.map_err(failed)?;
    let chain = order.poll_certificate(&patient).await.map_err(failed)?;
    Ok((chain, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_tokens_under_the_challenge_path_are_answered() {
        let challenges = Challenges::default();
        {
            let mut open = OpenChallenges {
                challenges: &challenges,
                tokens: Vec::new(),
            };
            open.open("tok3n", "tok3n.thumbprint");
            assert_eq!(
                challenges
                    .response("/.well-known/acme-challenge/tok3n")
                    .as_deref(),
                Some("tok3n.thumbprint")
            );
            assert_eq!(
                challenges.response("/.well-known/acme-challenge/other"),
                None
            );
            assert_eq!(challenges.response("/tok3n"), None);
        }
        assert_eq!(
            challenges.response("/.well-known/acme-challenge/tok3n"),
            None,
            "withdrawn when the order ends"
        );
    }

    #[test]
    fn the_port_80_side_answers_open_tokens_and_redirects_the_rest() {
        use crate::redirect::{RedirectOutcome, RedirectTable, answer};
        let challenges = Challenges::default();
        let table = RedirectTable::new(vec!["a.test".into()], "a.test".into(), 443)
            .answering_challenges(challenges.clone());
        let mut open = OpenChallenges {
            challenges: &challenges,
            tokens: Vec::new(),
        };
        open.open("tok3n", "tok3n.thumbprint");
        let (response, outcome) = answer(
            &table,
            b"GET /.well-known/acme-challenge/tok3n HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            outcome,
            RedirectOutcome::AcmeChallenge("/.well-known/acme-challenge/tok3n".into())
        );
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(response.ends_with(b"\r\n\r\ntok3n.thumbprint"));
        let (_, other) = answer(
            &table,
            b"GET /.well-known/acme-challenge/guess HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .unwrap();
        assert_eq!(other, RedirectOutcome::Redirected("https://a.test/".into()));
    }
}
