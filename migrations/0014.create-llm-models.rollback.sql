-- Drops llm_models: every model's budget and prices are lost (runs and their steps are kept).
DROP TABLE llm_models;
