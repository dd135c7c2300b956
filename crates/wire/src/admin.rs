//! The admin half of the request type: what keywardctl asks of the admin handler.
