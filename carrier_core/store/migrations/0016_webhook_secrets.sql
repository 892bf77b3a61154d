-- A webhook's signing secret is kept in the secret store (carrier_core.secrets), not in its
-- row: new webhooks store NULL here. Webhooks made before keep theirs in the row, which
-- their deliveries still read, until they are deleted (there is no way to move a secret
-- out from SQL: the secret store is not the database's to reach).
ALTER TABLE webhooks ALTER COLUMN secret DROP NOT NULL;
