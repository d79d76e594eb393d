-- The schema of the store crate's own tests of Db::open_service.
CREATE TABLE probe (id BIGINT PRIMARY KEY, note TEXT NOT NULL);
