"""What every service part uses: the error table (``errors``) and the request body limit
(``body_limit``)."""
