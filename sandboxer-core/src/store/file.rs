//! `sandboxes.json` (placeholder, being written).
use std::path::PathBuf;

use super::{Store, StoreDoc};
use crate::Result;

pub struct JsonFileStore {
    path: PathBuf,
}

impl JsonFileStore {
    pub fn new(path: PathBuf) -> Self {
        JsonFileStore { path }
    }
}

impl Store for JsonFileStore {
    fn load(&self) -> Result<StoreDoc> {
        Ok(StoreDoc::default())
    }
    fn update(&self, f: &mut dyn FnMut(&mut StoreDoc) -> Result<()>) -> Result<()> {
        let mut d = StoreDoc::default();
        f(&mut d)
    }
    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
