//! The built-in catalog and user profiles (placeholder, being written).
use std::path::Path;

use super::Profile;
use crate::Result;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub profiles: Vec<Profile>,
}

impl Catalog {
    pub fn load(_config_dir: &Path) -> Result<Catalog> {
        Ok(Catalog::default())
    }
    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }
}
