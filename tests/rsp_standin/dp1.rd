<?xml version="1.0" encoding="utf-8"?>
<!-- Data Preview 1 tables for the tests' DaCHS TAP service (tests/plugins/dachs.py).

Table and column names, types and units are those of Rubin's DP1 schema
(lsst/sdm_schemas, python/lsst/sdm/schemas/dp1.yaml) for dp1.DiaSource,
dp1.DiaObject, dp1.ForcedSourceOnDiaObject and dp1.Visit.  The rows come
from <table>.jsonl files next to this RD, which the fixture writes from the
test data (the ci_dc2 APDB and the DECam triplet's sources); a column a row
does not give is NULL.
-->
<resource schema="dp1" resdir=".">
  <meta name="title">zooprep test DP1 tables</meta>
  <meta name="description">DP1-schema tables filled from zooprep's test data.</meta>
  <meta name="creationDate">2026-12-03T00:00:00</meta>
  <meta name="subject">transients</meta>
  <table id="DiaSource" onDisk="True" adql="True" primary="diaSourceId">
    <column name="visit" type="bigint"/>
    <column name="detector" type="bigint"/>
    <column name="band" type="char"/>
    <column name="diaObjectId" type="bigint"/>
    <column name="ssObjectId" type="bigint"/>
    <column name="parentDiaSourceId" type="bigint"/>
    <column name="midpointMjdTai" type="double precision" unit="d"/>
    <column name="bboxSize" type="bigint"/>
    <column name="time_processed" type="timestamp"/>
    <column name="ra" type="double precision" unit="deg"/>
    <column name="dec" type="double precision" unit="deg"/>
    <column name="raErr" type="real" unit="deg"/>
    <column name="decErr" type="real" unit="deg"/>
    <column name="ra_dec_Cov" type="real" unit="deg**2"/>
    <column name="x" type="double precision" unit="pixel"/>
    <column name="y" type="double precision" unit="pixel"/>
    <column name="xErr" type="real" unit="pixel"/>
    <column name="yErr" type="real" unit="pixel"/>
    <column name="apFlux" type="real" unit="nJy"/>
    <column name="apFluxErr" type="real" unit="nJy"/>
    <column name="snr" type="double precision"/>
    <column name="psfFlux" type="real" unit="nJy"/>
    <column name="psfFluxErr" type="real" unit="nJy"/>
    <column name="psfChi2" type="real"/>
    <column name="psfNdata" type="integer" unit="pixel"/>
    <column name="trailFlux" type="real" unit="nJy"/>
    <column name="trailRa" type="double precision" unit="deg"/>
    <column name="trailDec" type="double precision" unit="deg"/>
    <column name="trailLength" type="double precision" unit="pixel"/>
    <column name="trailAngle" type="double precision"/>
    <column name="dipoleMeanFlux" type="double precision" unit="count"/>
    <column name="dipoleMeanFluxErr" type="double precision" unit="count"/>
    <column name="dipoleFluxDiff" type="double precision" unit="nJy"/>
    <column name="dipoleFluxDiffErr" type="double precision" unit="nJy"/>
    <column name="dipoleLength" type="double precision" unit="pixel"/>
    <column name="dipoleAngle" type="double precision" unit="deg"/>
    <column name="dipoleChi2" type="double precision"/>
    <column name="isDipole" type="boolean"/>
    <column name="dipoleFitAttempted" type="boolean"/>
    <column name="dipoleNdata" type="bigint"/>
    <column name="scienceFlux" type="real" unit="nJy"/>
    <column name="scienceFluxErr" type="real" unit="nJy"/>
    <column name="ixx" type="double precision" unit="arcsec**2"/>
    <column name="iyy" type="double precision" unit="arcsec**2"/>
    <column name="ixy" type="double precision" unit="arcsec**2"/>
    <column name="ixxPSF" type="double precision" unit="arcsec**2"/>
    <column name="iyyPSF" type="double precision" unit="arcsec**2"/>
    <column name="ixyPSF" type="double precision" unit="arcsec**2"/>
    <column name="extendedness" type="double precision"/>
    <column name="reliability" type="real"/>
    <column name="pixelFlags" type="boolean"/>
    <column name="pixelFlags_offimage" type="boolean"/>
    <column name="pixelFlags_edge" type="boolean"/>
    <column name="pixelFlags_interpolated" type="boolean"/>
    <column name="pixelFlags_saturated" type="boolean"/>
    <column name="pixelFlags_cr" type="boolean"/>
    <column name="pixelFlags_bad" type="boolean"/>
    <column name="pixelFlags_suspect" type="boolean"/>
    <column name="pixelFlags_interpolatedCenter" type="boolean"/>
    <column name="pixelFlags_saturatedCenter" type="boolean"/>
    <column name="pixelFlags_crCenter" type="boolean"/>
    <column name="pixelFlags_suspectCenter" type="boolean"/>
    <column name="centroid_flag" type="boolean"/>
    <column name="apFlux_flag" type="boolean"/>
    <column name="apFlux_flag_apertureTruncated" type="boolean"/>
    <column name="psfFlux_flag" type="boolean"/>
    <column name="psfFlux_flag_noGoodPixels" type="boolean"/>
    <column name="psfFlux_flag_edge" type="boolean"/>
    <column name="forced_PsfFlux_flag" type="boolean"/>
    <column name="forced_PsfFlux_flag_noGoodPixels" type="boolean"/>
    <column name="forced_PsfFlux_flag_edge" type="boolean"/>
    <column name="shape_flag" type="boolean"/>
    <column name="shape_flag_no_pixels" type="boolean"/>
    <column name="shape_flag_not_contained" type="boolean"/>
    <column name="shape_flag_parent_source" type="boolean"/>
    <column name="trail_flag_edge" type="boolean"/>
    <column name="pixelFlags_streak" type="boolean"/>
    <column name="pixelFlags_streakCenter" type="boolean"/>
    <column name="pixelFlags_injected" type="boolean"/>
    <column name="pixelFlags_injectedCenter" type="boolean"/>
    <column name="pixelFlags_injected_template" type="boolean"/>
    <column name="pixelFlags_injected_templateCenter" type="boolean"/>
    <column name="pixelFlags_nodata" type="boolean"/>
    <column name="pixelFlags_nodataCenter" type="boolean"/>
    <column name="coord_ra" type="double precision" unit="deg"/>
    <column name="coord_dec" type="double precision" unit="deg"/>
    <column name="diaSourceId" type="bigint"/>
  </table>
  <table id="DiaObject" onDisk="True" adql="True" primary="diaObjectId">
    <column name="ra" type="double precision" unit="deg"/>
    <column name="dec" type="double precision" unit="deg"/>
    <column name="nDiaSources" type="bigint"/>
    <column name="radecMjdTai" type="double precision" unit="d"/>
    <column name="g_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="g_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="g_psfFluxMAD" type="real" unit="nJy"/>
    <column name="g_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="g_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="g_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="g_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="g_psfFluxNdata" type="double precision"/>
    <column name="g_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="g_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="g_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="g_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="g_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="g_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="g_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="g_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="g_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="g_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="g_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="g_psfFluxSkew" type="real"/>
    <column name="g_psfFluxChi2" type="real"/>
    <column name="g_psfFluxStetsonJ" type="double precision"/>
    <column name="r_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="r_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="r_psfFluxMAD" type="real" unit="nJy"/>
    <column name="r_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="r_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="r_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="r_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="r_psfFluxNdata" type="double precision"/>
    <column name="r_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="r_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="r_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="r_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="r_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="r_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="r_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="r_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="r_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="r_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="r_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="r_psfFluxSkew" type="real"/>
    <column name="r_psfFluxChi2" type="real"/>
    <column name="r_psfFluxStetsonJ" type="double precision"/>
    <column name="u_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="u_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="u_psfFluxMAD" type="real" unit="nJy"/>
    <column name="u_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="u_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="u_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="u_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="u_psfFluxNdata" type="double precision"/>
    <column name="u_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="u_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="u_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="u_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="u_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="u_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="u_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="u_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="u_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="u_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="u_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="u_psfFluxSkew" type="real"/>
    <column name="u_psfFluxChi2" type="real"/>
    <column name="u_psfFluxStetsonJ" type="double precision"/>
    <column name="i_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="i_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="i_psfFluxMAD" type="real" unit="nJy"/>
    <column name="i_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="i_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="i_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="i_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="i_psfFluxNdata" type="double precision"/>
    <column name="i_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="i_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="i_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="i_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="i_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="i_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="i_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="i_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="i_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="i_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="i_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="i_psfFluxSkew" type="real"/>
    <column name="i_psfFluxChi2" type="real"/>
    <column name="i_psfFluxStetsonJ" type="double precision"/>
    <column name="z_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="z_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="z_psfFluxMAD" type="real" unit="nJy"/>
    <column name="z_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="z_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="z_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="z_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="z_psfFluxNdata" type="double precision"/>
    <column name="z_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="z_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="z_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="z_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="z_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="z_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="z_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="z_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="z_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="z_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="z_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="z_psfFluxSkew" type="real"/>
    <column name="z_psfFluxChi2" type="real"/>
    <column name="z_psfFluxStetsonJ" type="double precision"/>
    <column name="y_psfFluxLinearSlope" type="double precision" unit="nJy/d"/>
    <column name="y_psfFluxLinearIntercept" type="double precision" unit="nJy"/>
    <column name="y_psfFluxMAD" type="real" unit="nJy"/>
    <column name="y_psfFluxMaxSlope" type="double precision" unit="nJy/d"/>
    <column name="y_psfFluxErrMean" type="real" unit="nJy"/>
    <column name="y_psfFluxMean" type="double precision" unit="nJy"/>
    <column name="y_psfFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="y_psfFluxNdata" type="double precision"/>
    <column name="y_scienceFluxMean" type="double precision" unit="nJy"/>
    <column name="y_scienceFluxMeanErr" type="double precision" unit="nJy"/>
    <column name="y_psfFluxMin" type="double precision" unit="nJy"/>
    <column name="y_psfFluxMax" type="double precision" unit="nJy"/>
    <column name="y_psfFluxPercentile05" type="double precision" unit="nJy"/>
    <column name="y_psfFluxPercentile25" type="double precision" unit="nJy"/>
    <column name="y_psfFluxPercentile50" type="double precision" unit="nJy"/>
    <column name="y_psfFluxPercentile75" type="double precision" unit="nJy"/>
    <column name="y_psfFluxPercentile95" type="double precision" unit="nJy"/>
    <column name="y_psfFluxSigma" type="double precision" unit="nJy"/>
    <column name="y_scienceFluxSigma" type="double precision" unit="nJy"/>
    <column name="y_psfFluxSkew" type="real"/>
    <column name="y_psfFluxChi2" type="real"/>
    <column name="y_psfFluxStetsonJ" type="double precision"/>
    <column name="diaObjectId" type="bigint"/>
  </table>
  <table id="ForcedSourceOnDiaObject" onDisk="True" adql="True">
    <column name="diaObjectId" type="bigint"/>
    <column name="parentObjectId" type="bigint"/>
    <column name="coord_ra" type="double precision" unit="deg"/>
    <column name="coord_dec" type="double precision" unit="deg"/>
    <column name="visit" type="bigint"/>
    <column name="detector" type="integer"/>
    <column name="band" type="char"/>
    <column name="psfFlux" type="real" unit="nJy"/>
    <column name="psfFluxErr" type="real" unit="nJy"/>
    <column name="psfFlux_flag" type="boolean"/>
    <column name="psfDiffFlux" type="real" unit="nJy"/>
    <column name="psfDiffFluxErr" type="real" unit="nJy"/>
    <column name="psfDiffFlux_flag" type="boolean"/>
    <column name="diff_PixelFlags_nodataCenter" type="boolean"/>
    <column name="pixelFlags_bad" type="boolean"/>
    <column name="pixelFlags_cr" type="boolean"/>
    <column name="pixelFlags_crCenter" type="boolean"/>
    <column name="pixelFlags_edge" type="boolean"/>
    <column name="pixelFlags_interpolated" type="boolean"/>
    <column name="pixelFlags_interpolatedCenter" type="boolean"/>
    <column name="pixelFlags_nodata" type="boolean"/>
    <column name="pixelFlags_saturated" type="boolean"/>
    <column name="pixelFlags_saturatedCenter" type="boolean"/>
    <column name="pixelFlags_suspect" type="boolean"/>
    <column name="pixelFlags_suspectCenter" type="boolean"/>
    <column name="invalidPsfFlag" type="boolean"/>
    <column name="tract" type="bigint"/>
    <column name="patch" type="bigint"/>
  </table>
  <table id="Visit" onDisk="True" adql="True" primary="visit">
    <column name="visit" type="bigint"/>
    <column name="physical_filter" type="text"/>
    <column name="band" type="char"/>
    <column name="ra" type="double precision" unit="deg"/>
    <column name="dec" type="double precision" unit="deg"/>
    <column name="skyRotation" type="double precision" unit="deg"/>
    <column name="azimuth" type="double precision" unit="deg"/>
    <column name="altitude" type="double precision" unit="deg"/>
    <column name="zenithDistance" type="double precision" unit="deg"/>
    <column name="airmass" type="double precision"/>
    <column name="expTime" type="double precision" unit="s"/>
    <column name="expMidpt" type="timestamp"/>
    <column name="expMidptMJD" type="double precision" unit="d"/>
    <column name="obsStart" type="timestamp"/>
    <column name="obsStartMJD" type="double precision" unit="d"/>
  </table>
  <data id="import_DiaSource">
    <sources>DiaSource.jsonl</sources>
    <embeddedGrammar>
      <iterator>
        <code>
          import json
          with open(self.sourceToken, encoding="utf-8") as f:
            for line in f:
              yield json.loads(line)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="DiaSource"/>
  </data>
  <data id="import_DiaObject">
    <sources>DiaObject.jsonl</sources>
    <embeddedGrammar>
      <iterator>
        <code>
          import json
          with open(self.sourceToken, encoding="utf-8") as f:
            for line in f:
              yield json.loads(line)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="DiaObject"/>
  </data>
  <data id="import_ForcedSourceOnDiaObject">
    <sources>ForcedSourceOnDiaObject.jsonl</sources>
    <embeddedGrammar>
      <iterator>
        <code>
          import json
          with open(self.sourceToken, encoding="utf-8") as f:
            for line in f:
              yield json.loads(line)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="ForcedSourceOnDiaObject"/>
  </data>
  <data id="import_Visit">
    <sources>Visit.jsonl</sources>
    <embeddedGrammar>
      <iterator>
        <code>
          import json
          with open(self.sourceToken, encoding="utf-8") as f:
            for line in f:
              yield json.loads(line)
        </code>
      </iterator>
    </embeddedGrammar>
    <make table="Visit"/>
  </data>
</resource>
