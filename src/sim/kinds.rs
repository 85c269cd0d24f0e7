//! The simulated resource kinds and their state machines: initial states, timed follow-ups,
//! actions, and which transitions MK.IO reports by webhook. Pure; no I/O.

/// Which configured duration a timed transition waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    Queued,
    Processing,
    Live,
}

/// The resource kinds the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Job,
    MediaLiveEvent,
    LiveOutput,
    StreamingEndpoint,
    StreamingLocator,
    Asset,
    /// A Live API resource; the value is its collection segment (`liveChannels`, ...).
    Live(&'static str),
}

/// The four Live API collections.
pub(crate) const LIVE_TYPES: [&str; 4] = [
    "liveChannels",
    "liveEvents",
    "staticMultiviewChannels",
    "staticMultiviewEvents",
];

/// What an action (start, stop, cancelJob, ...) does in the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Move(&'static str),
    NoOp,
    Conflict,
    Unknown,
}

impl Kind {
    /// `supplemental.kind` in lists.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::MediaLiveEvent => "LiveEvent",
            Kind::LiveOutput => "LiveOutput",
            Kind::StreamingEndpoint => "StreamingEndpoint",
            Kind::StreamingLocator => "StreamingLocator",
            Kind::Asset => "Asset",
            Kind::Live("liveChannels") => "LiveChannel",
            Kind::Live("liveEvents") => "LiveApiEvent",
            Kind::Live("staticMultiviewChannels") => "StaticMultiviewChannel",
            Kind::Live(_) => "StaticMultiviewEvent",
        }
    }

    /// The ARM `type` of Media API bodies.
    pub fn arm_type(self) -> &'static str {
        match self {
            Kind::Job => "Microsoft.Media/mediaservices/transforms/jobs",
            Kind::MediaLiveEvent => "Microsoft.Media/mediaservices/liveEvents",
            Kind::LiveOutput => "Microsoft.Media/mediaservices/liveEvents/liveOutputs",
            Kind::StreamingEndpoint => "Microsoft.Media/mediaservices/streamingEndpoints",
            Kind::StreamingLocator => "Microsoft.Media/mediaservices/streamingLocators",
            Kind::Asset => "Microsoft.Media/mediaservices/assets",
            Kind::Live(_) => "",
        }
    }

    /// The state a resource has right after its creating PUT.
    pub fn initial_state(self) -> &'static str {
        match self {
            Kind::Job => "Queued",
            Kind::MediaLiveEvent | Kind::Live(_) => "Stopped",
            Kind::LiveOutput | Kind::StreamingEndpoint | Kind::StreamingLocator => "Creating",
            Kind::Asset => "Pending",
        }
    }

    /// The transition that happens by itself after a while in `state`, if any.
    /// `fail` is the job's "end in Error" switch.
    pub fn follow_up(self, state: &str, fail: bool) -> Option<(Timing, &'static str)> {
        let live = |to| Some((Timing::Live, to));
        match (self, state) {
            (Kind::Job, "Queued" | "Scheduled") => Some((Timing::Queued, "Processing")),
            (Kind::Job, "Processing") => {
                Some((Timing::Processing, if fail { "Error" } else { "Finished" }))
            }
            (Kind::Job, "Canceling") => live("Canceled"),
            (Kind::Job, _) => None,
            (_, "Starting" | "Scaling") => live("Running"),
            (_, "Stopping") => live("Stopped"),
            (Kind::LiveOutput, "Creating") => live("Running"),
            (Kind::StreamingEndpoint, "Creating") => live("Stopped"),
            (Kind::StreamingLocator, "Creating") => live("Created"),
            (Kind::Asset, "Pending") => live("Ready"),
            _ => None,
        }
    }

    /// A POST action (`cancelJob`, `start`, `stop`, `reset`, `scale`) in `state`.
    pub fn action(self, action: &str, state: &str) -> Outcome {
        match (self, action) {
            (Kind::Job, "cancelJob") => match state {
                "Queued" | "Scheduled" | "Processing" => Outcome::Move("Canceling"),
                _ => Outcome::NoOp,
            },
            (Kind::MediaLiveEvent | Kind::StreamingEndpoint, "start") => match state {
                "Stopped" => Outcome::Move("Starting"),
                "Starting" | "Running" => Outcome::NoOp,
                _ => Outcome::Conflict,
            },
            (Kind::MediaLiveEvent | Kind::StreamingEndpoint, "stop") => match state {
                "Running" | "Starting" => Outcome::Move("Stopping"),
                "Stopping" | "Stopped" => Outcome::NoOp,
                _ => Outcome::Conflict,
            },
            (Kind::MediaLiveEvent, "reset") => match state {
                "Running" => Outcome::NoOp,
                _ => Outcome::Conflict,
            },
            (Kind::StreamingEndpoint, "scale") => match state {
                "Running" => Outcome::Move("Scaling"),
                "Stopped" => Outcome::NoOp,
                _ => Outcome::Conflict,
            },
            _ => Outcome::Unknown,
        }
    }

    /// A Live API `spec.state` change (PATCH or PUT) in reported `state`.
    pub fn desire(self, desired: &str, state: &str) -> Outcome {
        match (desired, state) {
            ("Running", "Starting" | "Running") => Outcome::NoOp,
            ("Running", _) => Outcome::Move("Starting"),
            ("Stopped", "Running" | "Starting" | "Updating") => Outcome::Move("Stopping"),
            ("Stopped", _) => Outcome::NoOp,
            _ => Outcome::Conflict,
        }
    }

    /// The webhook type MK.IO sends for `from -> to`, if it sends one (MKIO.md A.2).
    pub fn event_type(self, from: &str, to: &str) -> Option<&'static str> {
        match (self, to) {
            (Kind::Job, "Processing") if from != "Processing" => Some("MediaKind.JobStarted"),
            (Kind::Job, "Finished" | "Error" | "Canceled") => Some("MediaKind.JobFinished"),
            (Kind::StreamingLocator, "Created") => Some("MediaKind.StreamingLocatorCreated"),
            (Kind::Live("liveChannels"), "Running") => Some("MediaKind.ChannelInstanceStarted"),
            (Kind::Live("liveChannels"), "Stopped") => Some("MediaKind.ChannelInstanceStopped"),
            (Kind::Live("liveChannels"), "UnableToStart") => Some("MediaKind.ChannelInstanceError"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_to_finished_or_error_and_report_start_and_end() {
        assert_eq!(
            Kind::Job.follow_up("Queued", false),
            Some((Timing::Queued, "Processing"))
        );
        assert_eq!(
            Kind::Job.follow_up("Processing", true),
            Some((Timing::Processing, "Error"))
        );
        assert_eq!(Kind::Job.follow_up("Finished", false), None);
        assert_eq!(
            Kind::Job.event_type("Queued", "Processing"),
            Some("MediaKind.JobStarted")
        );
        assert_eq!(
            Kind::Job.event_type("Canceling", "Canceled"),
            Some("MediaKind.JobFinished")
        );
        assert_eq!(Kind::Job.event_type("Processing", "Canceling"), None);
        assert_eq!(Kind::Job.action("cancelJob", "Finished"), Outcome::NoOp);
    }

    #[test]
    fn only_live_channels_report_channel_events() {
        let ch = Kind::Live("liveChannels");
        assert_eq!(
            ch.event_type("Starting", "Running"),
            Some("MediaKind.ChannelInstanceStarted")
        );
        assert_eq!(
            Kind::Live("liveEvents").event_type("Starting", "Running"),
            None
        );
        assert_eq!(Kind::MediaLiveEvent.event_type("Starting", "Running"), None);
        assert_eq!(ch.desire("Running", "Stopped"), Outcome::Move("Starting"));
        assert_eq!(ch.desire("Stopped", "Stopped"), Outcome::NoOp);
        assert_eq!(ch.desire("Paused", "Stopped"), Outcome::Conflict);
    }

    #[test]
    fn media_actions_follow_the_resource_state() {
        let se = Kind::StreamingEndpoint;
        assert_eq!(se.action("start", "Stopped"), Outcome::Move("Starting"));
        assert_eq!(se.action("scale", "Running"), Outcome::Move("Scaling"));
        assert_eq!(se.action("start", "Stopping"), Outcome::Conflict);
        assert_eq!(
            se.follow_up("Scaling", false),
            Some((Timing::Live, "Running"))
        );
        assert_eq!(Kind::Asset.action("start", "Ready"), Outcome::Unknown);
    }
}
