/**
 * Winston logger: JSON lines for machines (production, or stdout not a terminal), readable
 * coloured text for a person at a terminal. Per-request child loggers carry `requestId`.
 */
import winston from 'winston';
import type { LogLevelName } from './config';

export type Logger = winston.Logger;

/** LOG_LEVEL names (Python-style, from the spec) to winston's npm levels. */
const WINSTON_LEVELS: Readonly<Record<LogLevelName, string>> = {
  DEBUG: 'debug',
  INFO: 'info',
  WARNING: 'warn',
  ERROR: 'error',
  // winston's npm levels stop at error; critical messages are logged as errors.
  CRITICAL: 'error',
};

export function winstonLevel(level: LogLevelName): string {
  return WINSTON_LEVELS[level];
}

export type LogFormat = 'json' | 'text';

/** JSON when a machine reads the stream (not a TTY) or in production; text otherwise. */
export function chooseLogFormat(stdoutIsTty: boolean, nodeEnv: string): LogFormat {
  return stdoutIsTty && nodeEnv !== 'production' ? 'text' : 'json';
}

export interface LoggerOptions {
  level: LogLevelName;
  format: LogFormat;
  /** Where lines go; defaults to the console (stdout). Tests pass a stream to capture lines. */
  stream?: NodeJS.WritableStream;
  /** Drop every line (tests that only need a logger to exist). */
  silent?: boolean;
}

const textFormat = winston.format.combine(
  winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
  winston.format.colorize(),
  winston.format.printf((info) => {
    const { timestamp, level, message, requestId, ...rest } = info;
    const id = typeof requestId === 'string' ? ` [${requestId}]` : '';
    const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
    return `${String(timestamp)} ${level}${id} ${String(message)}${extra}`;
  }),
);

const jsonFormat = winston.format.combine(
  winston.format.timestamp(),
  winston.format.errors({ stack: true }),
  winston.format.json(),
);

export function createLogger(options: LoggerOptions): Logger {
  const transport =
    options.stream === undefined
      ? new winston.transports.Console()
      : new winston.transports.Stream({ stream: options.stream });
  return winston.createLogger({
    level: winstonLevel(options.level),
    format: options.format === 'json' ? jsonFormat : textFormat,
    transports: [transport],
    silent: options.silent ?? false,
  });
}
