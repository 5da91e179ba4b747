//! Secret tokens carried in links (confirmation, unsubscribe).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// 32 random bytes (256 bits) from a CSPRNG, encoded as 43 URL-safe base64 characters.
const TOKEN_BYTES: usize = 32;
const TOKEN_CHARS: usize = 43;

/// A token as it appears in a link. Only [`Token::hash`] is ever stored for confirmation tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the link is malformed: its token is not one Squeeze issued")]
pub struct TokenError;

impl Token {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        // ThreadRng is ChaCha12 reseeded from the OS: a CSPRNG.
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly the shape [`Token::generate`] produces, so junk never reaches the store.
    pub fn parse(input: &str) -> Result<Self, TokenError> {
        let ok = input.len() == TOKEN_CHARS
            && URL_SAFE_NO_PAD
                .decode(input)
                .is_ok_and(|b| b.len() == TOKEN_BYTES);
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(TokenError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the token: what the database keeps.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TOKEN_CHARS);
        assert_eq!(Token::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn rejects_forged_shapes() {
        for bad in [
            "",
            "abc",
            &"A".repeat(44),
            &format!("{}=", "A".repeat(42)),
            &"!".repeat(43),
        ] {
            assert_eq!(Token::parse(bad), Err(TokenError), "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
