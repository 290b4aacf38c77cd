-- Creates llm_models: an LLM model's per-minute budget (requests and tokens, shared by every worker and API
-- process through this table) and its prices, which cost each generative_ai step's usage. A model without a row
-- has no budget and no price. Managed through PUT/GET/DELETE /llm-models/{model} (flowline/api/llm_models.py).
-- Rollback (0014.create-llm-models.rollback.sql) drops the table: every budget and price is lost.
-- depends: 0013.create-run-list-view
CREATE TABLE llm_models (
    -- The model name a generative_ai step calls (its config's model, else LLM_MODEL), e.g. openai/gpt-4o.
    model                         text        PRIMARY KEY,
    -- Per-minute limits (NULL: no limit of that kind).
    requests_per_minute           integer,
    tokens_per_minute             integer,
    -- Prices in US dollars per million tokens (NULL: no price; the cost of such a step is NULL).
    usd_per_million_input_tokens  numeric,
    usd_per_million_output_tokens numeric,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT llm_models_model_length CHECK (char_length(model) BETWEEN 1 AND 200),
    CONSTRAINT llm_models_limits_positive CHECK (requests_per_minute > 0 AND tokens_per_minute > 0),
    CONSTRAINT llm_models_prices_positive
        CHECK (usd_per_million_input_tokens > 0 AND usd_per_million_output_tokens > 0)
);
COMMENT ON TABLE llm_models IS 'An LLM model''s per-minute budget, shared by every worker, and its prices per million tokens.';
