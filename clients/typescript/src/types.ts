/**
 * Named request and response types: aliases of the generated components['schemas'] (see
 * api-types.ts, generated from the server's OpenAPI document).
 */
import type { components } from './api-types';

type Schemas = components['schemas'];

export type ServerInfo = Schemas['ServerInfo'];
export type HealthResponse = Schemas['Health'];
export type ErrorResponse = Schemas['Error'];

export type SegmentRequest = Schemas['SegmentRequest'];
export type SegmentResponse = Schemas['SegmentResponse'];
export type CachedFeaturesRequest = Schemas['CachedFeaturesRequest'];
export type CachedFeaturesResponse = Schemas['CachedFeaturesResponse'];
export type CachedFeaturesResult = CachedFeaturesResponse['results'][number];

/** One prompt of an image or video request. */
export type Prompt = SegmentRequest['prompts'][number];
export type TextPrompt = Schemas['TextPrompt'];
export type BoxPrompt = Schemas['BoxPrompt'];
export type PointPrompt = Schemas['PointPrompt'];

/** A COCO compressed RLE mask as the server returns it: {size: [height, width], counts}. */
export type RleMask = SegmentResponse['masks'][number];

export type StartSessionRequest = Schemas['StartSessionRequest'];
export type StartSessionResponse = Schemas['StartSessionResponse'];
export type VideoInfo = StartSessionResponse['video_info'];
/** A device a session may be placed on: a GPU index or "cpu". */
export type GpuId = NonNullable<StartSessionRequest['gpu_ids']>[number];
export type SessionsListResponse = Schemas['SessionList'];
export type SessionSummary = SessionsListResponse['sessions'][number];
export type VideoPromptRequest = Schemas['VideoPromptRequest'];
export type VideoPromptResponse = Schemas['VideoPromptResponse'];
export type PropagateRequest = Schemas['PropagateRequest'];
export type PropagateResponse = Schemas['PropagateResponse'];
export type FrameResult = PropagateResponse['results'][string];
export type TrackedObject = FrameResult['objects'][number];
export type PropagateStreamMessage = Schemas['PropagateStreamMessage'];
/** A {"type": "frame"} message of a propagation stream. */
export type PropagateFrame = Extract<PropagateStreamMessage, { type: 'frame' }>;
/** The {"type": "complete"} message that ends a propagation stream. */
export type PropagateComplete = Extract<PropagateStreamMessage, { type: 'complete' }>;
export type SessionStatusResponse = Schemas['SessionStatus'];
export type RemoveObjectResponse = Schemas['RemoveObjectResponse'];
export type RemoveConceptResponse = Schemas['RemoveConceptResponse'];
export type ResetSessionResponse = Schemas['ResetSessionResponse'];
export type CloseSessionResponse = Schemas['CloseSessionResponse'];
