/** The Strata version written into every manifest (`tool.version`). */
export const STRATA_VERSION = '0.1.0';
